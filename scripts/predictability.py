"""The predictability table: how well past gradients predict each window's first target step.

Reads finished ``metaopt targets`` run directories (their ``targets/*.pt`` shards) and prints one markdown table:
for each dataset and third of training, the connected windows, the bend (median normalized length) and, for a fixed
least-squares predictor on gradient features cross-fitted over base seeds (:mod:`metaopt.targets.predict`), the
10% / 50% / 90% of the held-out explained fraction R^2 of the first target step and the median cosine; beside it the
same medians for the chord's first step (theta_{t+T} - theta_t) / T and for the base optimizer's own step (teacher).

    python scripts/predictability.py runs/bend/*/ [--out FILE] [--coefficients]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from metaopt.commands.targets import PHASES, phase_of
from metaopt.targets import TargetsError, load_shard
from metaopt.targets.predict import FEATURES, STEP_KINDS, WindowResult, evaluate_shards

HEADER = (
    "| task | optimizer | rule | phase | windows | bend p50 | R^2 p10 / p50 / p90 | cos p50 | chord R^2 p50 | "
    "chord cos p50 | teacher R^2 p50 | teacher cos p50 |\n"
    "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|"
)


def _task(spec: dict[str, Any]) -> str:
    activation = (spec.get("options") or {}).get("activation")
    return spec["name"] + (f" ({activation})" if activation and activation != "sigmoid" else "")


def _rule(shard: dict[str, Any]) -> str:
    """The level rule, with T and the bead target's alpha where they differ from the sweep's (T = 20, alpha 0.95)."""
    rule = f"between q={shard['q']:g}" if shard["level"] == "between" else shard["level"]
    rule += f", T = {shard['window']}" if shard["window"] != 20 else ""
    alpha = shard["dss"].get("alpha", 0.95)
    return rule + (f", alpha {alpha:g}" if alpha != 0.95 else "")


def _quantile(values: Sequence[float], q: float) -> float:
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), q)) if values else float("nan")


def _shards(path: Path) -> list[dict[str, Any]]:
    folder = path / "targets" if (path / "targets").is_dir() else path
    files = sorted(folder.glob("*.pt")) if folder.is_dir() else []
    if not files:
        raise TargetsError(f"no target shards in {folder}; give a finished `metaopt targets` run directory")
    return [load_shard(f) for f in files]


def dataset_rows(path: Path, coefficients: bool = False) -> list[str]:
    """The table rows (one per phase) of one run directory, and a coefficient line when asked."""
    shards = _shards(path)
    first, steps = shards[0], int(shards[0]["steps"])
    results, fitted = evaluate_shards(shards)
    rows = []
    for phase in PHASES:
        by_kind: dict[str, list[WindowResult]] = {
            kind: [r for r in results[kind] if phase_of(r.t, steps) == phase] for kind in STEP_KINDS
        }
        geodesic = by_kind["geodesic"]
        if not geodesic:
            continue
        r2 = [r.r2 for r in geodesic]
        bend = _quantile([r.normalized_length for r in geodesic], 0.5)
        rows.append(
            f"| {_task(first['task'])} | {first['optimizer']} (lr {first['lr']:g}) | {_rule(first)} | {phase} | "
            f"{len(geodesic)} | {bend:.3f} | "
            + " / ".join(f"{_quantile(r2, q):.3f}" for q in (0.1, 0.5, 0.9))
            + f" | {_quantile([r.cosine for r in geodesic], 0.5):.3f} | "
            + " | ".join(f"{_quantile([getattr(r, key) for r in by_kind[kind]], 0.5):.3f}"
                         for kind in ("chord", "teacher") for key in ("r2", "cosine"))
            + " |"
        )  # fmt: skip
    if coefficients:
        for kind, c in fitted.items():
            terms = ", ".join(f"{name} {value:+.3g}" for name, value in zip(FEATURES, c.tolist()))
            rows.append(f"<!-- {path.name} {kind}: {terms} -->")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Print the predictability table of the run folders on the command line; 2 for a missing or empty folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished `metaopt targets` run directories")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--coefficients", action="store_true", help="add each fit's mean coefficients as comments")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    lines = [HEADER]
    try:
        for path in args.runs:
            lines.extend(dataset_rows(path, args.coefficients))
    except (TargetsError, ValueError) as exc:
        print(f"predictability: {exc}", file=sys.stderr)
        return 2
    table = "\n".join(lines) + "\n"
    print(table, end="")
    print(f"({len(args.runs)} datasets in {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.out is not None:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
