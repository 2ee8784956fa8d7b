"""Pictures of a comparison: a PNG per task and TensorBoard runs where one task's optimizers overlay in one chart.

PNG (``plots/<task>.png``): left, the mean training-loss curve of every optimizer with its 95% band on a log scale and
the targets as labelled reference lines; middle, the evaluation (held-out) loss of the final weights per optimizer
beside its final training loss, where overfitting shows; right, the tuning curve (mean final loss against learning
rate, chosen point marked).

TensorBoard (``tb/``): one run per optimizer (``tb/<optimizer>/``) with the tags ``compare/<task>/loss_mean``,
``loss_ci_low`` and ``loss_ci_high`` per step, so choosing a tag overlays every optimizer, and
``compare/<task>/final_eval_loss``; a custom-scalars layout draws each task's mean with its band. The config and the
report go as text into the reference optimizer's run (the first optimizer's without one), so no run holds text alone
and TensorBoard shows no empty run. ``tb/`` is rewritten from the results each time, so it never mixes two
executions.
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
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_task", "task_title", "write_tensorboard"]


def task_title(task: TaskResult) -> str:
    """``label (task name, options), N steps``; the task name only once when the label is the name."""
    options = ", ".join(f"{k}={v}" for k, v in task.config.options.items())
    what = task.config.name + (f", {options}" if options else "")
    head = what if task.label == task.config.name and not options else f"{task.label} ({what})"
    return f"{head}, {task.config.steps} steps"


def _target_label(task: TaskResult, target: float, reference: str) -> str:
    if task.targets_from_reference:
        return f"target: {reference}'s mean final loss ({target:.3g})"
    return f"target {target:.3g}"


def plot_task(task: TaskResult, reference: str, tune_on: str = "train") -> Figure:
    """Training-loss curves, final evaluation (held-out) losses, and tuning curves of one task.

    Left: mean training-loss curve of every optimizer with its 95% band (log scale) and the targets as labelled
    dotted lines. Middle: each optimizer's evaluation loss of the final weights (per seed, and the mean with its 95%
    interval) beside its final training loss, so an optimizer that overfits (low training, high evaluation loss)
    shows; the reference's mean evaluation loss is a labelled dashed line. Right: the tuning curves (of the final
    training loss, or with ``tune_on="eval"`` of the evaluation loss).
    """
    fig, (curves_ax, eval_ax, tuning_ax) = subplots(1, 3, figsize=(17, 4.8), layout="constrained",
                                                    gridspec_kw={"width_ratios": [3, 2, 2]})  # fmt: skip
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
        curves_ax.axhline(target, color="0.4", lw=0.9, ls=":", label=_target_label(task, target, reference))
    curves_ax.set_yscale("log")
    if positive:  # a lower band edge below zero would otherwise stretch the log axis
        curves_ax.set_ylim(bottom=min(positive) / 3)
    seeds = max((row.curves.shape[0] for row in task.optimizers), default=0)
    curves_ax.set(xlabel="step", ylabel="training loss (mean, 95% interval)", title="training loss")
    curves_ax.legend(fontsize=8)
    curves_ax.grid(alpha=0.3, which="both")
    _plot_eval(eval_ax, task, reference)
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
    score = "eval" if tune_on == "eval" else "final"
    tuning_ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel=f"mean {score} loss (tuning seeds)")
    tuning_ax.set_title("tuning (★ chosen; gap: diverged; ▲: off the scale)")
    tuning_ax.grid(alpha=0.3, which="both")
    if tuning_ax.has_data():
        tuning_ax.legend(fontsize=8)
    fig.suptitle(f"{task_title(task)}, {seeds} paired seeds")
    return fig


def _plot_eval(ax: Axes, task: TaskResult, reference: str) -> None:
    """Per optimizer: evaluation loss per seed (dots), its mean with 95% interval, and the final training loss."""
    names: list[str] = []
    train_label, eval_label = "final training loss (mean)", "evaluation loss (mean, 95% interval)"
    for x, row in enumerate(task.optimizers):
        names.append(row.optimizer)
        if row.eval_loss.n == 0:
            continue
        color = f"C{x % 10}"
        values = [v for v in row.eval_by_seed if np.isfinite(v)] if row.eval_by_seed is not None else []
        ax.plot(np.full(len(values), x - 0.12), values, ".", color=color, alpha=0.35, ms=4)
        half = row.eval_loss.half if np.isfinite(row.eval_loss.half) else 0.0
        ax.errorbar([x - 0.12], [row.eval_loss.mean], yerr=[[half], [half]], fmt="o", color=color, capsize=3,
                    label=eval_label)  # fmt: skip
        if row.final.n:
            ax.plot([x + 0.12], [row.final.mean], "s", mfc="none", mec=color, ms=6, label=train_label)
        train_label = eval_label = "_"  # one legend entry each
        if row.optimizer == reference:
            ax.axhline(row.eval_loss.mean, color="0.4", lw=0.9, ls="--",
                       label=f"{reference}'s mean evaluation loss ({row.eval_loss.mean:.3g})")  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set(ylabel="loss of the final weights", title="evaluation loss (held-out data)")
    ax.grid(alpha=0.3, which="both", axis="y")
    if ax.has_data():
        ax.legend(fontsize=8)


def write_tensorboard(
    tb_dir: Path, tasks: Sequence[TaskResult], config_text: str, report_text: str, reference: str = ""
) -> None:
    """Rewrite ``tb_dir``: one run per optimizer; the config, report and chart layout in the reference's run."""
    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(tb_dir, ignore_errors=True)
    layout = {
        "compare": {
            task.label: ["Margin", [f"compare/{task.label}/loss_{s}" for s in ("mean", "ci_low", "ci_high")]]
            for task in tasks
        }
    }
    optimizers = list(dict.fromkeys(row.optimizer for task in tasks for row in task.optimizers))
    home = reference if reference in optimizers else optimizers[0] if optimizers else ""
    for name in optimizers:
        with SummaryWriter(str(tb_dir / name)) as writer:
            if name == home:
                writer.add_text("config", "```yaml\n" + config_text + "\n```", 0)
                writer.add_text("report", report_text, 0)
                writer.add_custom_scalars(layout)
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
