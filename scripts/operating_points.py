"""Operating points: each optimizer's mean final training loss against its mean evaluation loss, per task.

A learned rule with a lower evaluation loss than tuned Adam may only sit at another point of the trade between
fitting the training set and generalising, one Adam would reach at another learning rate. This script reads
``metaopt compare`` run directories (for Adam's curve, one run per learning rate: ``lr_grid=[x]``) and, for every task,
takes each (optimizer, learning rate)'s evaluation runs: the mean final training loss (over ``final_window`` steps,
as the report) and the mean evaluation loss over the evaluation seeds. It prints, for each learned arm, whether some
learning rate of the reference optimizer is at least as good on both (the arm is *dominated*), and draws one panel
per task (log-log; the reference's points joined in the order of the rate).

    python scripts/operating_points.py runs/adam-lr* runs/arms --reference adam --figure docs/img/points.png

Only evaluation runs count (the tuning runs are other seeds); runs that diverged are left out of the means.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from metaopt.compare.stats import final_loss

Point = tuple[float, float, int]
"""(mean final training loss, mean evaluation loss, runs)."""


def operating_points(runs: Sequence[Path]) -> dict[str, dict[tuple[str, float | None], Point]]:
    """``{task: {(optimizer, lr): (train, eval, n)}}`` from the evaluation runs of the given run directories.

    A later directory's runs of the same (task, optimizer, lr, seed) replace an earlier one's.
    """
    finals: dict[tuple[str, str, float | None, int], tuple[float, float]] = {}
    for run in runs:
        window = int(yaml.safe_load((run / "config.yaml").read_text())["final_window"])
        with open(run / "records.jsonl") as handle:
            for line in handle:
                record = json.loads(line)
                if record.get("kind") != "unit" or record["phase"] != "eval" or record["diverged"]:
                    continue
                key = (record["task"], record["optimizer"], record["lr"], record["seed"])
                finals[key] = (final_loss([float(v) for v in record["losses"]], window), float(record["eval_loss"]))
    grouped: dict[tuple[str, str, float | None], list[tuple[float, float]]] = defaultdict(list)
    for (task, optimizer, lr, _), value in finals.items():
        grouped[(task, optimizer, lr)].append(value)
    points: dict[str, dict[tuple[str, float | None], Point]] = defaultdict(dict)
    for (task, optimizer, lr), values in grouped.items():
        train, evaluation = np.mean(np.asarray(values), axis=0)
        points[task][(optimizer, lr)] = (float(train), float(evaluation), len(values))
    return dict(points)


def dominating(point: Point, reference: dict[float | None, Point]) -> list[float | None]:
    """The reference's learning rates whose point is at least as good as ``point`` on both losses."""
    return [lr for lr, (train, evaluation, _) in reference.items() if train <= point[0] and evaluation <= point[1]]


def main(argv: Sequence[str] | None = None) -> int:
    """Print each task's points and which reference rates dominate each arm; draw the panels with ``--figure``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="metaopt compare run directories")
    parser.add_argument("--reference", default="adam", help="the optimizer whose learning rates draw the curve")
    parser.add_argument("--figure", type=Path, help="write the panels to this PNG")
    parser.add_argument("--tasks", nargs="*", help="only these tasks, in this order (default: all, sorted)")
    args = parser.parse_args(argv)
    points = operating_points(args.runs)
    tasks = args.tasks or sorted(points)
    for task in tasks:
        reference = {lr: p for (name, lr), p in points[task].items() if name == args.reference}
        print(f"{task}: {args.reference} " + ", ".join(
            f"{lr:.3g}: {t:.3g} / {e:.3g}" for lr, (t, e, _) in sorted(reference.items(), key=lambda kv: kv[0] or 0)
        ))  # fmt: skip
        for (name, _), point in sorted(points[task].items(), key=lambda kv: kv[0][0]):
            if name == args.reference:
                continue
            better = dominating(point, reference)
            verdict = (
                "dominated by " + ", ".join(f"{x:.3g}" for x in better if x is not None) if better else "not dominated"
            )
            print(f"  {name}: {point[0]:.3g} / {point[1]:.3g} ({point[2]} runs): {verdict}")
    if args.figure:
        draw(points, tasks, args.reference, args.figure)
    return 0


def draw(
    points: dict[str, dict[tuple[str, float | None], Point]], tasks: list[str], reference: str, path: Path
) -> None:
    """One log-log panel per task: the reference's points joined by rate, every other arm a labelled marker."""
    from envs.tooling.plots import save_figure, subplots

    columns = min(4, len(tasks))
    rows = math.ceil(len(tasks) / columns)
    fig, axes = subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), layout="constrained", squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        curve = sorted((lr, p) for (name, lr), p in points[task].items() if name == reference and lr is not None)
        ax.plot([p[0] for _, p in curve], [p[1] for _, p in curve], "o-", color="0.3", ms=4, lw=1, label=reference)
        for lr, p in curve:
            ax.annotate(f"{lr:.2g}", (p[0], p[1]), fontsize=6, color="0.3", xytext=(3, 2), textcoords="offset points")
        others = sorted((name, p) for (name, _), p in points[task].items() if name != reference)
        for i, (name, p) in enumerate(others):
            ax.plot([p[0]], [p[1]], "s", color=f"C{i % 10}", ms=6, label=name.removeprefix("learned-"))
        ax.set(xscale="log", yscale="log", title=task, xlabel="final training loss", ylabel="evaluation loss")
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(5, len(labels)), fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
