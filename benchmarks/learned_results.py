"""Learned optimizer versus tuned Adam and RMSProp, paired over unseen seeds (the numbers in docs/results.md).

For each case (a task, its options and a horizon) every baseline's learning rate is tuned on a log grid (1e-4 .. 1
in half decades) by mean final loss over tuning seeds; then the learned optimizer and the tuned baselines train the
same evaluation seeds (same problem instance, initial weights and batches for every optimizer) and are scored by the
training loss after the last step (on the next batch; exact for full-batch tasks), as in the L2L paper; the
evaluation-set loss is reported beside it. Evaluation seeds are 0..N-1, which meta-training never uses (its seeds start
at 100000). Prints one JSON object per case and a Markdown table; ``--plot`` writes the mean training-loss curves.

    OMP_NUM_THREADS=1 python benchmarks/learned_results.py --checkpoint runs/x/checkpoints/best.pt \
        --case "quadratic" --case "digits_mlp steps=200 width=40" [--eval-seeds 100] [--plot curves.png]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import envs
from envs.runs import Run
from metaopt import LearnedOptimizer
from metaopt.baselines import LR_GRID, train_plain, tune_lr
from metaopt.train import TUNE_SEED_BASE, VAL_SEED_BASE


def parse_case(text: str) -> tuple[str, int, dict[str, Any]]:
    name, *pairs = text.split()
    options: dict[str, Any] = {}
    steps = 100
    for pair in pairs:
        key, value = pair.split("=", 1)
        parsed: Any = int(value) if value.lstrip("-").isdigit() else value
        if key == "steps":
            steps = int(value)
        else:
            options[key] = parsed
    return name, steps, options


def summary(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    sem = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else float("nan")
    mean = statistics.fmean(values) if len(finite) == len(values) else math.inf
    return {"mean": mean, "sem": sem, "median": statistics.median(values), "diverged": len(values) - len(finite)}


def evaluate(
    checkpoint: str, text: str, eval_seeds: int, tune_seeds: int, baselines: list[str], grid: list[float]
) -> dict[str, Any]:
    name, steps, options = parse_case(text)
    task = envs.make_task(name, **options)
    seeds = list(range(eval_seeds))
    assert max(seeds) < VAL_SEED_BASE
    tuning = [TUNE_SEED_BASE + k for k in range(tune_seeds)]
    runs = {
        "learned": [train_plain(task, s, lambda p: LearnedOptimizer(p, checkpoint=checkpoint), steps) for s in seeds]
    }
    result: dict[str, Any] = {"case": text, "task": name, "options": options, "steps": steps, "eval_seeds": eval_seeds}
    for baseline in baselines:
        lr, _ = tune_lr(task, baseline, tuning, steps, grid)
        result[f"{baseline}_lr_at_grid_edge"] = lr in (min(grid), max(grid))
        runs[baseline] = [train_plain(task, s, lambda p, b=baseline, lr=lr: envs.make_optimizer(b, p, lr=lr), steps)
                          for s in seeds]  # fmt: skip
        result[f"{baseline}_lr"] = lr
    for key, rs in runs.items():
        result[key] = summary([r.final_loss for r in rs])
        result[f"{key}_eval"] = summary([r.eval_loss for r in rs])
    for baseline in baselines:
        wins = sum(a.final_loss < b.final_loss for a, b in zip(runs["learned"], runs[baseline]))
        result[f"learned_beats_{baseline}"] = f"{wins}/{eval_seeds}"
    result["curves"] = {key: [statistics.fmean(r.losses[t] for r in rs) for t in range(steps)]
                        for key, rs in runs.items() if all(len(r.losses) == steps for r in rs)}  # fmt: skip
    return result


def table(results: list[dict[str, Any]], baselines: list[str]) -> str:
    names = ["learned", *baselines]
    head = "| case | steps | " + " | ".join(f"{n} train" for n in names) + " | "
    head += " | ".join(f"learned < {b}" for b in baselines) + " | " + " | ".join(f"{n} eval" for n in names) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(names) + len(baselines))]
    for r in results:
        best = min(r[n]["mean"] for n in names)
        cells = [
            f"{mark}{r[n]['mean']:.4g}{mark} ± {r[n]['sem']:.2g}"
            + (f" (lr {r[f'{n}_lr']:.3g})" if n != "learned" else "")
            for n in names
            for mark in ["**" if r[n]["mean"] == best else ""]
        ]
        cells += [r[f"learned_beats_{b}"] for b in baselines]
        cells += [f"{r[f'{n}_eval']['mean']:.4g}" for n in names]
        lines.append(f"| {r['case']} | {r['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path, training_run: Path | None = None) -> None:
    """Mean training-loss curves of every case; with ``training_run``, also that run's validation history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(results) + (training_run is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    for ax, r in zip(axes[0], results):
        for key, curve in r["curves"].items():
            ax.plot(range(1, len(curve) + 1), curve, label=key)
        ax.set_yscale("log")
        ax.set_title(f"{r['case']} ({r['eval_seeds']} unseen seeds)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("mean training loss")
        ax.legend(fontsize=8)
    if training_run is not None:
        records = [r for r in Run(training_run).records("episode") if "learned_final_loss" in r]
        ax = axes[0][-1]
        ax.plot([r["meta_step"] for r in records], [r["learned_final_loss"] for r in records], "o-", label="learned")
        ax.plot([r["meta_step"] for r in records], [r["adam_final_loss"] for r in records], "--", label="tuned Adam")
        ax.set_yscale("log")
        ax.set_title(f"validation during meta-training: {training_run.name}", fontsize=9)
        ax.set_xlabel("meta-step")
        ax.set_ylabel("mean final training loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--case", action="append", required=True, help='"TASK [steps=N] [option=value ...]"')
    parser.add_argument("--eval-seeds", type=int, default=100)
    parser.add_argument("--tune-seeds", type=int, default=10)
    parser.add_argument("--baselines", nargs="+", default=["adam", "rmsprop"])
    parser.add_argument("--lr-grid", type=float, nargs="+", default=list(LR_GRID), help="default 1e-4..1, half decades")
    parser.add_argument("--plot", type=Path, help="write the loss curves to this PNG")
    parser.add_argument("--training-run", type=Path, help="add this meta-training run's validation history to the plot")
    parser.add_argument("--json", type=Path, help="also write the results (with curves) to this file")
    args = parser.parse_args()
    results = []
    for case in args.case:
        result = evaluate(args.checkpoint, case, args.eval_seeds, args.tune_seeds, args.baselines, args.lr_grid)
        print(json.dumps({k: v for k, v in result.items() if k != "curves"}), flush=True)
        results.append(result)
    print(table(results, args.baselines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(results, args.plot, args.training_run)


if __name__ == "__main__":
    main()
