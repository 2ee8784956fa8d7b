"""Re-check the strings of sweeps with the certified segment check (the paper preset's table).

A sweep run under the paper preset (``configs/geodesics/sweep/paper/``) accepts a segment whose largest loss on the
reference grid (100 points, never t = 1, no slack) is at most 1.1 L0. This script loads every string of each run,
checks its segments again with the default :class:`~geodesics.CurveConfig` (grid with both ends, refined peaks,
concavity slack) and prints, per level, the mode's own figures beside the certified maximum over L0 of its path::

    python scripts/paper_recheck.py runs/paper-pq runs/cert-pq
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from envs.task.registry import task_from_spec
from geodesics import BeadString, CurveConfig, ParamSpace, segment_maxima


def recheck(run: Path) -> list[str]:
    """Markdown rows of one run: level, connected, means of length, beads, own and certified maximum over L0."""
    lines = (run / "records.jsonl").read_text().splitlines()
    records = [r for r in (json.loads(line) for line in lines if line.strip()) if r.get("kind") == "pair"]
    rows: dict[float, list[tuple[bool, float, int, float, float]]] = defaultdict(list)
    spaces: dict[str, ParamSpace] = {}
    for record in records:
        if not record.get("trained"):
            rows[record["threshold"]].append((False, float("nan"), 0, float("nan"), float("nan")))
            continue
        string = BeadString.load(run / record["string"])
        name = string.task["name"]
        space = spaces.setdefault(name, ParamSpace(task_from_spec(string.task)))
        checks = segment_maxima(space, string.beads[:-1], string.beads[1:], CurveConfig())
        ratio = max(c.upper for c in checks) / string.threshold
        own = float(string.segment_upper.max()) / string.threshold
        rows[record["threshold"]].append((string.connected, string.normalized_length, string.num_beads, own, ratio))
    out = []
    for threshold in sorted(rows, reverse=True):
        pairs = rows[threshold]
        done = [p for p in pairs if p[0]]
        means = [sum(p[i] for p in done) / len(done) if done else float("nan") for i in range(5)]
        worst = max((p[4] for p in done), default=float("nan"))
        out.append(
            f"| {run.name} | {threshold:g} | {len(done)}/{len(pairs)} | {means[1]:.4f} | {means[2]:.2f} | "
            f"{means[2] - 2:.2f} | {means[3]:.4f} | {means[4]:.4f} (worst {worst:.4f}) |"
        )
    return out


if __name__ == "__main__":
    print("| run | L0 | connected | normalized length | beads | interior | own max / L0 | certified max / L0 |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for argument in sys.argv[1:]:
        print("\n".join(recheck(Path(argument))))
