"""The bend table: normalized lengths of ``metaopt targets`` runs by rule, optimizer and phase.

Reads finished ``metaopt targets`` run directories and prints one markdown table per task: for each level rule, base
optimizer and third of training, the connected windows, those longer than the chord by more than 0.1% (bent), the
10% / 50% / 90% / max of the normalized length, the median and max of the descent leg (over the chord), the max of
the DSS part over its own chord, why windows were not connected, and the run's windows per minute (60 x windows over
the shards' work, base runs included).

    python scripts/bend_table.py runs/bend/*/
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from metaopt.commands.targets import phase_of, spread_by_phase

BENT = 1e-3
"""A window counts as bent when its normalized length exceeds 1 by more than this."""


def _task(cfg: dict) -> str:
    task = cfg["tasks"][0]
    activation = task.get("options", {}).get("activation")
    return task["name"] + (f" ({activation})" if activation and activation != "sigmoid" else "")


def _reason(window: dict) -> str:
    return window["reason"].split(":")[0].split("(")[0].strip()


def _bent(windows: list[dict], phase: str, steps: int) -> int:
    """Connected windows of ``phase`` whose normalized length exceeds 1 by more than ``BENT``."""
    return sum(
        w["connected"] and w["normalized_length"] > 1 + BENT and phase_of(w["t"], steps) == phase for w in windows
    )


def _rule(cfg: dict) -> str:
    """The level rule, with T and the bead target's alpha where they differ from the sweep's (T = 20, alpha 0.95)."""
    rule = f"between q={cfg['q']:g}" if cfg["level"] == "between" else cfg["level"]
    rule += f", T = {cfg['window']}" if cfg["window"] != 20 else ""
    return rule + (f", alpha {cfg['dss']['alpha']:g}" if cfg["dss"]["alpha"] != 0.95 else "")


def main() -> None:
    """Print the bend tables of the run folders given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    tables: dict[str, list[tuple[tuple[int, str, str, int], list[str]]]] = defaultdict(list)
    order = {"start": 0, "between": 1, "descent": 2}
    for path in args.runs:
        if not (path / "report.md").is_file():
            continue
        cfg = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"))
        records = [json.loads(line) for line in (path / "records.jsonl").read_text().splitlines()]
        records = [r for r in records if r.get("kind") == "shard"]
        windows = [w for r in records for w in r["per_window"]]
        per_minute = 60 * len(windows) / sum(r["seconds"] for r in records)
        lines = []
        for phase, entry in spread_by_phase(windows, cfg["steps"]).items():
            reasons = Counter(
                _reason(w) for w in windows if not w["connected"] and phase_of(w["t"], cfg["steps"]) == phase
            )
            missed = ", ".join(f"{n} {reason}" for reason, n in reasons.items())
            length = entry.get("normalized_length")
            leg = entry.get("descent_length")
            inside = entry.get("inside_normalized_length")
            lines.append(
                f"| {_rule(cfg)} | {cfg['optimizer']} (lr {cfg['lr']:g}) | {cfg['seeds']} | {phase} | "
                f"{entry['connected']}/{entry['windows']} | {_bent(windows, phase, cfg['steps'])} | "
                + (" / ".join(f"{v:.3f}" for v in length[1:]) if length else "-")
                + f" | {f'{leg[2]:.3f} / {leg[4]:.3f}' if leg else '-'} | {f'{inside[4]:.4f}' if inside else '-'} | "
                f"{missed or '-'} | {per_minute:.0f} |"
            )  # fmt: skip
        tables[_task(cfg)].append(((order[cfg["level"]], _rule(cfg), cfg["optimizer"], len(windows)), lines))
    header = ("| rule | optimizer | seeds | phase | connected | bent | normalized length p10 / p50 / p90 / max "
              "| descent leg p50 / max "
              "| inside over own chord, max | not connected | windows / min |\n"
              "|---|---|---:|---|---:|---:|---|---|---:|---|---:|")  # fmt: skip
    for task, rows in tables.items():
        print(f"\n`{task}`\n\n{header}")
        for _, lines in sorted(rows):
            print("\n".join(lines))


if __name__ == "__main__":
    main()
