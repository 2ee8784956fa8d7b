"""The arm table of the five-arm experiment: several meta-training seeds per arm, read from one compare run.

The compare run (``metaopt compare configs/compare/five_arms_digits_mlp.yaml``) evaluates every checkpoint as its own
optimizer, named ``<arm>_s<seed>``. For each task and arm this prints, per meta-training seed, the mean over the paired
evaluation seeds of (learned final loss - tuned reference final loss), and then over the seeds: their mean with a 95%
t-interval (the spread between meta-training seeds, not between evaluation seeds), their range and the paired wins.
A second table sets the arms against each other: the difference of the arms' seed means with a 95% interval from the
meta-training seeds (pooled variance, n1 + n2 - 2 degrees of freedom), which answers "by more than the spread between
meta-training seeds?". The design pairs the arms: meta-training seed s starts every arm from the same rule and draws
the same windows, and all arms share the evaluation seeds; so a third table gives the paired contrast, the mean over
the seeds s present in both arms of (arm a's seed-s mean - arm b's), with a 95% t-interval over those seeds (n - 1
degrees of freedom). A fourth gives the evaluation-set loss after the last step.

    python scripts/five_arms_table.py runs/five/compare [runs/five/compare-control ...] [--arms loss teacher ...]
        [--out FILE]

Several compare runs are read together (the same tuned reference, evaluation seeds and tasks; an arm missing from
every run is left out).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.special import stdtrit

from metaopt.compare.stats import final_loss, interval

ARMS = ["loss", "teacher", "chord", "bent", "bent_loss", "chord_loss"]
CONTRASTS = [("bent", "teacher"), ("bent", "chord"), ("bent", "loss"), ("bent_loss", "loss"), ("chord", "teacher"),
             ("teacher", "loss"), ("bent_loss", "chord_loss"), ("chord_loss", "loss")]  # fmt: skip
NAME = re.compile(r"^(?P<arm>.+)_s(?P<seed>\d+)$")


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (NaN without any)."""
    return float(stdtrit(df, 0.975)) if df > 0 else math.nan


def load(run: Path) -> tuple[dict, dict, list[str], str, int]:
    """Final and evaluation losses by (task, optimizer) and evaluation seed, the tasks, the reference, the window."""
    config = (run / "config.yaml").read_text()
    window_match = re.search(r"^final_window:\s*(\d+)", config, re.M)
    window = int(window_match.group(1)) if window_match else 10
    reference_match = re.search(r"^reference:\s*(\S+)", config, re.M)
    reference = reference_match.group(1) if reference_match else "adam"
    finals: dict = defaultdict(dict)  # (task, optimizer) -> {eval seed: final loss}
    evals: dict = defaultdict(dict)
    tasks: list[str] = []
    for path in sorted(run.glob("records*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("kind") != "unit" or record.get("phase") != "eval":
                continue
            key = (record["task"], record["optimizer"])
            if record["task"] not in tasks:
                tasks.append(record["task"])
            finals[key][int(record["seed"])] = math.nan if record["diverged"] else final_loss(record["losses"], window)
            evals[key][int(record["seed"])] = float(record["eval_loss"]) if not record["diverged"] else math.nan
    return finals, evals, tasks, reference, window


def seed_means(finals: dict, task: str, arm: str, reference: str) -> tuple[list[float], int, int, int]:
    """Per meta-training seed, the mean paired difference to the reference; total wins, evaluations, divergences."""
    ref = finals[(task, reference)]
    means, wins, count, diverged = [], 0, 0, 0
    names = sorted(opt for (t, opt) in finals if t == task and (m := NAME.match(opt)) and m.group("arm") == arm)
    for name in names:
        diffs = [finals[(task, name)][s] - ref[s] for s in ref if s in finals[(task, name)]]
        diverged += sum(1 for d in diffs if not math.isfinite(d))
        finite = [d for d in diffs if math.isfinite(d)]
        wins += sum(1 for d in finite if d < 0)
        count += len(diffs)
        means.append(float(np.mean(finite)) if finite else math.nan)
    return means, wins, count, diverged


def by_seed(finals: dict, task: str, arm: str, reference: str) -> dict[int, float]:
    """Per meta-training seed of ``arm``: the mean over the evaluation seeds of (its final loss - the reference's)."""
    ref = finals[(task, reference)]
    out: dict[int, float] = {}
    for (t, opt), values in finals.items():
        match = NAME.match(opt)
        if t != task or not match or match.group("arm") != arm:
            continue
        diffs = [values[s] - ref[s] for s in ref if s in values and math.isfinite(values[s] - ref[s])]
        out[int(match.group("seed"))] = float(np.mean(diffs)) if diffs else math.nan
    return out


def paired(finals: dict, task: str, a: str, b: str, reference: str) -> tuple[float, float, int]:
    """The paired contrast of arms ``a`` and ``b``: mean over shared seeds of the difference, 95% half-width, n."""
    x, y = by_seed(finals, task, a, reference), by_seed(finals, task, b, reference)
    diffs = np.array([x[s] - y[s] for s in sorted(set(x) & set(y)) if math.isfinite(x[s] - y[s])])
    if len(diffs) < 2:
        return (float(diffs.mean()) if len(diffs) else math.nan), math.nan, len(diffs)
    return (
        float(diffs.mean()),
        t_quantile(len(diffs) - 1) * float(diffs.std(ddof=1)) / math.sqrt(len(diffs)),
        len(diffs),
    )


def fmt(x: float) -> str:
    """A signed difference in three digits."""
    return "–" if not math.isfinite(x) else f"{x:+.3g}"


def main(argv: list[str] | None = None) -> int:
    """Print (and with --out write) the three tables; 2 when the directory holds no compare records."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="the compare run directories")
    parser.add_argument("--arms", nargs="+", default=ARMS)
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    finals: dict = defaultdict(dict)
    evals: dict = defaultdict(dict)
    tasks: list[str] = []
    for run in args.runs:
        if not list(run.glob("records*.jsonl")):
            print(f"error: runs: no compare records in {run}", file=sys.stderr)
            return 2
        more_finals, more_evals, more_tasks, reference, window = load(run)
        for key, values in more_finals.items():
            finals[key].update(values)
        for key, values in more_evals.items():
            evals[key].update(values)
        tasks += [t for t in more_tasks if t not in tasks]
    present = {m.group("arm") for (_, opt) in finals if (m := NAME.match(opt))}
    args.arms = [arm for arm in args.arms if arm in present]
    lines = [f"Final training loss (mean of the last {window} steps) minus tuned {reference}'s on the same evaluation "
             "seed; per arm: mean over the meta-training seeds ± 95% t-interval over those seeds [the seeds' own "
             "means], paired wins over all evaluations, divergences.", ""]  # fmt: skip
    lines.append("| task | " + reference + " final | " + " | ".join(args.arms) + " |")
    lines.append("|---|---:|" + "---|" * len(args.arms))
    per: dict = {}
    for task in tasks:
        ref = finals[(task, reference)]
        cells = [task, f"{np.mean(list(ref.values())):.4g}"]
        for arm in args.arms:
            means, wins, count, diverged = seed_means(finals, task, arm, reference)
            per[(task, arm)] = means
            values = np.array([m for m in means if math.isfinite(m)])
            if not len(values):
                cells.append("–")
                continue
            over_seeds = interval(values)
            seeds = ", ".join(fmt(m) for m in means)
            cell = f"{fmt(over_seeds.mean)} ± {over_seeds.half:.2g} [{seeds}], {wins}/{count}"
            cells.append(cell + (f", {diverged} diverged" if diverged else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Arm against arm: difference of the arms' seed means (negative: the first arm trains "
        "further), 95% interval from the meta-training seeds (pooled variance); * where it excludes 0.",
        "",
    ]
    contrasts = [(a, b) for a, b in CONTRASTS if a in args.arms and b in args.arms]
    lines.append("| task | " + " | ".join(f"{a} − {b}" for a, b in contrasts) + " |")
    lines.append("|---|" + "---:|" * len(contrasts))
    for task in tasks:
        cells = [task]
        for a, b in contrasts:
            x = np.array([m for m in per[(task, a)] if math.isfinite(m)])
            y = np.array([m for m in per[(task, b)] if math.isfinite(m)])
            if len(x) < 2 or len(y) < 2:
                cells.append("–")
                continue
            df = len(x) + len(y) - 2
            pooled = ((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / df
            half = t_quantile(df) * math.sqrt(pooled * (1 / len(x) + 1 / len(y)))
            diff = x.mean() - y.mean()
            cells.append(f"{fmt(diff)} ± {half:.2g}" + ("*" if abs(diff) > half else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Paired: mean over the meta-training seeds of both arms of (arm a's seed mean - arm b's), 95% "
              "interval over those seeds; * where it excludes 0.", ""]  # fmt: skip
    lines.append("| task | " + " | ".join(f"{a} − {b}" for a, b in contrasts) + " |")
    lines.append("|---|" + "---:|" * len(contrasts))
    for task in tasks:
        cells = [task]
        for a, b in contrasts:
            diff, half, n = paired(finals, task, a, b, reference)
            cells.append(
                "–" if not math.isfinite(half) else f"{fmt(diff)} ± {half:.2g}" + ("*" if abs(diff) > half else "")
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Evaluation-set loss after the last step, mean over evaluation seeds and meta-training seeds "
              f"({reference}: tuned):", ""]  # fmt: skip
    lines.append("| task | " + reference + " | " + " | ".join(args.arms) + " |")
    lines.append("|---|---:|" + "---:|" * len(args.arms))
    for task in tasks:
        cells = [task, f"{np.nanmean(list(evals[(task, reference)].values())):.4g}"]
        for arm in args.arms:
            values = [v for (t, opt), seeds in evals.items() if t == task and (m := NAME.match(opt))
                      and m.group("arm") == arm for v in seeds.values()]  # fmt: skip
            cells.append(f"{np.nanmean(values):.4g}" if values and not all(map(math.isnan, values)) else "–")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
