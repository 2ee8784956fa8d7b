"""Pictures of a comparison: a PNG per task and TensorBoard runs where one task's optimizers overlay in one chart.

PNG (``plots/<task>.png``): left, the mean training-loss curve of every optimizer with its 95% band on a log scale;
right, the tuning curve (mean final loss against learning rate, chosen point marked).

TensorBoard (``tb/``): one run per optimizer (``tb/<optimizer>/``) with the tags ``compare/<task>/loss_mean``,
``loss_ci_low`` and ``loss_ci_high`` per step, so choosing a tag overlays every optimizer; a custom-scalars layout
draws each task's mean with its band; the root run holds the config and the report as text. ``tb/`` is rewritten from
the results each time, so it never mixes two executions.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from envs.tooling.plots import subplots
from metaopt.compare.results import TaskResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_task", "write_tensorboard"]


def plot_task(task: TaskResult, reference: str) -> Figure:
    """Mean curves with 95% bands (log scale) and tuning curves of one task."""
    fig, (curves_ax, tuning_ax) = subplots(1, 2, figsize=(12, 4.5), layout="constrained",
                                           gridspec_kw={"width_ratios": [3, 2]})  # fmt: skip
    positive: list[float] = []
    for i, row in enumerate(task.optimizers):
        if not row.curves.shape[0]:
            continue
        mean, half = row.curve_interval
        steps = np.arange(len(mean))
        color = f"C{i % 10}"
        lr = "own lr" if row.tuning is None else f"lr {row.lr:.3g}"
        curves_ax.plot(steps, mean, color=color, lw=1.6, label=f"{row.optimizer} ({lr})")
        if np.isfinite(half).any():
            curves_ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.18, lw=0)
        positive += [float(v) for v in mean if v > 0]
    for target in task.targets:
        curves_ax.axhline(target, color="0.5", lw=0.8, ls=":")
    curves_ax.set_yscale("log")
    if positive:  # a lower band edge below zero would otherwise stretch the log axis
        curves_ax.set_ylim(bottom=min(positive) / 3)
    seeds = max((row.curves.shape[0] for row in task.optimizers), default=0)
    curves_ax.set(
        xlabel="step",
        ylabel="training loss (mean, 95% interval)",
        title=f"{task.label}: {task.config.name}, {task.config.steps} steps, {seeds} paired seeds",
    )
    curves_ax.legend(fontsize=8)
    curves_ax.grid(alpha=0.3, which="both")
    tuned = [(i, row.tuning) for i, row in enumerate(task.optimizers) if row.tuning is not None]
    # scores far above the smallest learning rate's (blown up without becoming NaN) are drawn at the top edge
    starts = [t.scores[0] for _, t in tuned if np.isfinite(t.scores[0])]
    ceiling = 10 * max(starts) if starts else np.inf
    for i, tuning in tuned:
        lrs, scores = np.asarray(tuning.lrs), np.asarray(tuning.scores)
        color, name = f"C{i % 10}", task.optimizers[i].optimizer
        tuning_ax.plot(lrs, np.minimum(scores, ceiling), "o-", color=color, ms=3, lw=1, label=name)
        above = scores > ceiling
        tuning_ax.plot(lrs[above], np.full(above.sum(), ceiling), "^", color=color, ms=6)
        if tuning.chosen is not None:
            best = float(scores[list(lrs).index(tuning.chosen)])
            tuning_ax.plot([tuning.chosen], [best], "*", ms=12, color=color, mec="k")
    tuning_ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="mean final loss (tuning seeds)")
    tuning_ax.set_title("tuning (★ chosen; gap: diverged; ▲: off the scale)")
    tuning_ax.grid(alpha=0.3, which="both")
    if tuning_ax.has_data():
        tuning_ax.legend(fontsize=8)
    return fig


def write_tensorboard(tb_dir: Path, tasks: Sequence[TaskResult], config_text: str, report_text: str) -> None:
    """Rewrite ``tb_dir`` with one run per optimizer and the config, report and chart layout in the root run."""
    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(tb_dir, ignore_errors=True)
    layout = {
        "compare": {
            task.label: ["Margin", [f"compare/{task.label}/loss_{s}" for s in ("mean", "ci_low", "ci_high")]]
            for task in tasks
        }
    }
    with SummaryWriter(str(tb_dir)) as root:
        root.add_text("config", "```yaml\n" + config_text + "\n```", 0)
        root.add_text("report", report_text, 0)
        root.add_custom_scalars(layout)
    optimizers = list(dict.fromkeys(row.optimizer for task in tasks for row in task.optimizers))
    for name in optimizers:
        with SummaryWriter(str(tb_dir / name)) as writer:
            for task in tasks:
                for row in task.optimizers:
                    if row.optimizer != name or not row.curves.shape[0]:
                        continue
                    mean, half = row.curve_interval
                    half = np.nan_to_num(half)  # one seed: no interval, the band collapses onto the mean
                    prefix = f"compare/{task.label}"
                    for step, (m, h) in enumerate(zip(mean.tolist(), half.tolist())):
                        writer.add_scalar(f"{prefix}/loss_mean", m, step)
                        writer.add_scalar(f"{prefix}/loss_ci_low", m - h, step)
                        writer.add_scalar(f"{prefix}/loss_ci_high", m + h, step)
                    writer.add_scalar(f"{prefix}/final_eval_loss", row.eval_loss.mean, task.config.steps)
