"""The written results of a comparison: ``report.md`` (a table per task, in-distribution and held-out apart) and CSVs.

``results.csv`` has one row per (task, optimizer) with every number of the report at full precision; ``tuning.csv``
the mean final loss of every grid point; ``curves.csv`` the mean training-loss curves with their 95% intervals.
Nothing here computes statistics; it formats :class:`~metaopt.compare.results.TaskResult` objects.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from metaopt.compare.config import CompareConfig
from metaopt.compare.results import OptimizerResult, TaskResult
from metaopt.compare.stats import TargetResult, iqm

__all__ = [
    "csv_text",
    "curve_rows",
    "render_report",
    "result_rows",
    "results_table",
    "short_lines",
    "summary_table",
    "tuning_rows",
]


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}"


def _lr_text(row: OptimizerResult, multiplier: bool = False) -> str:
    """The chosen learning rate; ``×m`` for the step multiplier of a tuned learned arm."""
    if row.tuning is None:
        return "own (not tuned)"
    if row.tuning.chosen is None:
        return "none stable"
    return ("×" if multiplier else "") + f"{row.tuning.chosen:.3g}" + (" (grid edge)" if row.tuning.at_edge else "")


def _steps_text(target: TargetResult) -> str:
    if target.seeds == 0:
        return "–"
    steps = "never" if target.steps is None else str(target.steps)
    return f"{steps} ({target.reached}/{target.seeds})"


def _diverged_text(row: OptimizerResult) -> str:
    tune = f"{row.tuning.diverged_runs}/{len(row.tuning.lrs) * row.tuning.seeds}" if row.tuning else "–"
    return f"{tune} · {row.diverged}/{row.seeds}" if row.seeds else f"{tune} · –"


def _options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "default options"


def _target_name(task: TaskResult, target: float, cfg: CompareConfig) -> str:
    return f"{target:.4g} ({cfg.reference} final)" if task.targets_from_reference else f"{target:.4g}"


def results_table(task: TaskResult, cfg: CompareConfig) -> str:
    """The main Markdown table of one task: one row per optimizer."""
    header = ["optimizer", "lr", "final train loss", "final eval loss", f"Δ final vs {cfg.reference}, paired (wins)",
              f"Δ eval vs {cfg.reference}, paired (wins)", f"speed-up ({cfg.reference}-equivalent steps)"]  # fmt: skip
    for target in task.targets:
        name = _target_name(task, target, cfg)
        header += [f"steps to ≤ {name} (seeds)", "speed-up"]
    if cfg.timing:
        header += ["ms/step (plain)", "µs/run-step (batched)", "speed-up in wall time (plain)"]
    header.append("diverged (tune · eval)")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in task.optimizers:
        paired = f"{row.paired.difference} ({row.paired.wins}/{row.paired.difference.n})" if row.paired else "–"
        paired_eval = (
            f"{row.paired_eval.difference} ({row.paired_eval.wins}/{row.paired_eval.difference.n})"
            if row.paired_eval
            else "–"
        )
        speedup = "–" if row.speedup is None else f"{row.speedup:.3g}×"
        lr = _lr_text(row, row.optimizer in cfg.tuned_learned)
        cells = [row.optimizer, lr, str(row.final), str(row.eval_loss), paired, paired_eval, speedup]
        for reached in row.targets:
            cells += [_steps_text(reached), reached.speedup_text]
        if cfg.timing:
            per_step = row.seconds_per_step
            batched = row.batched_seconds_per_run_step
            wall = "–" if row.wall_speedup is None else f"{row.wall_speedup:.3g}×"
            cells += [_num(per_step * 1e3 if per_step else None, 3), _num(batched * 1e6 if batched else None, 3), wall]
        cells.append(_diverged_text(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def short_lines(task: TaskResult, cfg: CompareConfig) -> list[str]:
    """One line per optimizer of a task: final training and evaluation loss, paired against the reference.

    What a command prints when the full tables go to the report only (the quickstart).
    """
    lines = [f"{task.label} ({'held out' if task.config.held_out else 'in distribution'}):"]
    for row in task.optimizers:
        text = f"  {row.optimizer}: final {_num(row.final.mean)}, eval {_num(row.eval_loss.mean)}"
        if row.paired is not None:
            text += f"; vs {cfg.reference}: final {row.paired.wins}/{row.paired.difference.n} seeds lower"
        if row.paired_eval is not None:
            text += f", eval {row.paired_eval.wins}/{row.paired_eval.difference.n}"
        if row.diverged:
            text += f"; {row.diverged} of {row.seeds} runs diverged"
        lines.append(text)
    return lines


def _tuning_table(task: TaskResult, cfg: CompareConfig, multipliers: bool = False) -> str:
    """The tuning scores of the tuned baselines (or, ``multipliers``, of the tuned learned arms' step multipliers)."""
    tuned = [
        row for row in task.optimizers if row.tuning is not None and (row.optimizer in cfg.tuned_learned) == multipliers
    ]
    if not tuned:
        return ""
    lrs = tuned[0].tuning.lrs if tuned[0].tuning else ()
    header = [
        "learned arm" if multipliers else "optimizer",
        *(("×" if multipliers else "") + f"{lr:.3g}" for lr in lrs),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in tuned:
        assert row.tuning is not None
        cells = [row.optimizer]
        for lr, score, diverged in zip(row.tuning.lrs, row.tuning.scores, row.tuning.diverged):
            text = f"div {diverged}/{row.tuning.seeds}" if diverged else _num(score, 3)
            cells.append(f"**{text}**" if lr == row.tuning.chosen else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(tasks: Sequence[TaskResult], cfg: CompareConfig) -> str:
    """One row per optimizer across all tasks: where it beats the reference, its speed-ups' IQM, its divergences."""
    header = [
        "optimizer",
        f"tasks: lower train loss than {cfg.reference}",
        f"tasks: lower eval loss than {cfg.reference}",
        "paired wins, train (eval)",
        f"speed-up IQM ({cfg.reference}-equivalent steps)",
        "speed-up min – max",
        *(["wall-clock speed-up IQM (plain step)"] if cfg.timing else []),
        "tasks with a diverged eval run",
        "diverged eval runs",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name in cfg.optimizers:
        rows = [(task, row) for task in tasks for row in task.optimizers if row.optimizer == name]
        refs = {task.label: r for task in tasks for r in task.optimizers if r.optimizer == cfg.reference}
        train_better = eval_better = compared = wins = wins_eval = pairs = 0
        speedups: list[float] = []
        walls: list[float] = []
        diverged_tasks = diverged_runs = 0
        for task, row in rows:
            diverged_runs += row.diverged
            diverged_tasks += row.diverged > 0 or (row.tuning is not None and row.tuning.chosen is None)
            # a task where no run finished counts as a loss and a speed-up of 0
            speedups.append(0.0 if row.speedup is None else row.speedup)
            if row.wall_speedup is not None or row.speedup is None:  # untimed tasks stay out; unfinished count 0
                walls.append(0.0 if row.wall_speedup is None else row.wall_speedup)
            ref = refs.get(task.label)
            if name == cfg.reference or ref is None:
                continue
            compared += 1
            train_better += row.final.n > 0 and (ref.final.n == 0 or row.final.mean < ref.final.mean)
            eval_better += row.eval_loss.n > 0 and (ref.eval_loss.n == 0 or row.eval_loss.mean < ref.eval_loss.mean)
            if row.paired:
                wins, pairs = wins + row.paired.wins, pairs + row.paired.difference.n
            if row.paired_eval:
                wins_eval += row.paired_eval.wins
        is_reference = name == cfg.reference
        cells = [
            name,
            "(reference)" if is_reference else f"{train_better}/{compared}",
            "(reference)" if is_reference else f"{eval_better}/{compared}",
            "(reference)" if is_reference else f"{wins} ({wins_eval}) of {pairs}",
            _num(iqm(speedups), 3) + "×" if speedups else "–",
            f"{min(speedups):.3g}× – {max(speedups):.3g}×" if speedups else "–",
            *([_num(iqm(walls), 3) + "×" if walls else "–"] if cfg.timing else []),
            f"{diverged_tasks}/{len(rows)}",
            f"{diverged_runs}/{sum(row.seeds for _, row in rows)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tuning_score(cfg: CompareConfig) -> str:
    """What the tuning minimises, in words: the mean final training loss or the mean evaluation loss."""
    return "mean evaluation loss (of the final weights)" if cfg.tune_on == "eval" else "mean final training loss"


def _eval_tuning_note(cfg: CompareConfig) -> str:
    if cfg.tune_on != "eval":
        return ""
    return (" (`tune_on: eval`: the choice sees the evaluation set, on the tuning seeds, not on the evaluation seeds"
            " below; it favours the tuned optimizers on the evaluation loss.)")  # fmt: skip


def _conventions(cfg: CompareConfig) -> str:
    tune, evaluation = cfg.tuning_seed_list, cfg.eval_seed_list
    grid = ", ".join(f"{lr:.3g}" for lr in cfg.lr_grid)
    multipliers = (
        f" Arms labelled `-tuned` ({', '.join(cfg.tuned_learned)}) are learned rules whose step multiplier (their"
        f" lr, 1 = the rule as trained; shown as ×m) is tuned the same way, on the same tuning seeds, over"
        f" {', '.join(f'{m:.3g}' for m in cfg.learned_lr_grid)}: it is chosen on these tasks, as the baselines'"
        f" learning rates are."
        if cfg.tuned_learned
        else ""
    )
    timing = (
        " Wall time: median step time of one plain-loop run (batch, forward, backward, optimizer step) on the first"
        " evaluation seed at the chosen learning rate, the cost as a drop-in optimizer; batched: wall time of the"
        " vectorized evaluation runs / (runs × steps). Speed-up in wall time: the speed-up in"
        f" {cfg.reference}-equivalent steps × {cfg.reference}'s plain step time / the optimizer's, so a dearer step"
        " is paid for (one timed run each, so it moves with the machine's load)."
        if cfg.timing
        else ""
    )
    return (
        f"Learning rates tuned on the grid {grid} with {len(tune)} tuning seeds ({tune[0]}–{tune[-1]}): the one with"
        f" the lowest {tuning_score(cfg)}, where the *final loss* of a run is its mean training loss over the"
        f" last {cfg.final_window} steps; a learning rate that diverged (NaN or infinite loss) on any tuning seed is"
        f" never chosen.{_eval_tuning_note(cfg)} Evaluation on {len(evaluation)} other seeds"
        f" ({evaluation[0]}–{evaluation[-1]}), paired: on a"
        f" seed every optimizer starts from the same weights and sees the same batches. Losses are training losses of"
        f" each step's batch before the update; the eval loss is the evaluation-set loss after the last step."
        f" Intervals are 95% t-intervals over the evaluation seeds; diverged runs are left out of every mean and"
        f" counted in the last column. Steps to reach a loss: first step where the *mean* curve is at or below it"
        f" (in brackets, seeds whose own curve gets there). Speed-up = {cfg.reference}'s steps / the optimizer's"
        f" steps (>x: {cfg.reference} never got there, so horizon / steps is a lower bound). Paired Δ: final loss"
        f" minus {cfg.reference}'s on the same seed (negative is better; wins = seeds with a lower loss); the same"
        f" for the eval loss. Speed-up in {cfg.reference}-equivalent steps: if the optimizer's mean final loss is at"
        f" or below {cfg.reference}'s, {cfg.reference}'s steps to reach its own final loss / the optimizer's steps to"
        f" reach it; otherwise {cfg.reference}'s steps to reach the optimizer's final loss / the horizon (below 1×)."
        f" Across tasks: its interquartile mean (IQM, the middle half of the tasks; a task with no finished run"
        f" counts 0×).{multipliers}{timing}"
    )


def render_report(cfg: CompareConfig, tasks: Sequence[TaskResult], *, level: int = 1, title: bool = True) -> str:
    """The Markdown text of ``report.md``.

    Args:
        cfg: the comparison's config.
        tasks: its results.
        level: heading level of the title; sections and tasks are one and two levels below (another report embeds
            the comparison as a section with ``level=2, title=False``).
        title: start with the title line.
    """
    section, entry = "#" * (level + 1), "#" * (level + 2)
    parts = [f"{'#' * level} Optimizer comparison: {', '.join(cfg.optimizers)}"] if title else []
    parts += ["", _conventions(cfg)]
    if len(tasks) > 1:
        parts += ["", f"{section} Across tasks", "", summary_table(tasks, cfg)]
    for heading, held_out in (("In-distribution tasks", False), ("Held-out tasks", True)):
        group = [task for task in tasks if task.config.held_out == held_out]
        if not group:
            continue
        parts += ["", f"{section} {heading}"]
        for task in group:
            parts += ["", f"{entry} `{task.label}`: {task.config.name}, {_options_text(task.config.options)},"
                      f" {task.config.steps} steps", "", results_table(task, cfg)]  # fmt: skip
            tuning = _tuning_table(task, cfg)
            if tuning:
                parts += ["", f"Tuning: {tuning_score(cfg)} per learning rate (**chosen**; div k/n: diverged on k"
                          " of n tuning seeds).", "", tuning]  # fmt: skip
            tuning = _tuning_table(task, cfg, multipliers=True)
            if tuning:
                parts += ["", f"Tuning of the learned arms' step multiplier: {tuning_score(cfg)} per multiplier"
                          " (**chosen**; div k/n: diverged on k of n tuning seeds).", "", tuning]  # fmt: skip
    return "\n".join(parts) + "\n"


def result_rows(cfg: CompareConfig, tasks: Sequence[TaskResult]) -> list[dict[str, Any]]:
    """One row per (task, optimizer) with every reported number at full precision (``results.csv``)."""
    rows = []
    width = max((len(task.targets) for task in tasks), default=0)
    for task in tasks:
        for row in task.optimizers:
            record: dict[str, Any] = {
                "task": task.label,
                "task_name": task.config.name,
                "task_options": json.dumps(task.config.options, sort_keys=True),
                "steps": task.config.steps,
                "held_out": task.config.held_out,
                "optimizer": row.optimizer,
                "path": row.path,
                "tuned": row.tuning is not None,
                "lr": row.lr,
                "lr_at_grid_edge": row.tuning.at_edge if row.tuning else None,
                "tuning_runs": len(row.tuning.lrs) * row.tuning.seeds if row.tuning else 0,
                "tuning_diverged": row.tuning.diverged_runs if row.tuning else 0,
                "eval_seeds": row.seeds,
                "eval_diverged": row.diverged,
                "final_loss_mean": row.final.mean,
                "final_loss_ci95": row.final.half,
                "eval_loss_mean": row.eval_loss.mean,
                "eval_loss_ci95": row.eval_loss.half,
                "paired_diff_mean": row.paired.difference.mean if row.paired else None,
                "paired_diff_ci95": row.paired.difference.half if row.paired else None,
                "paired_wins": row.paired.wins if row.paired else None,
                "paired_seeds": row.paired.difference.n if row.paired else None,
                "paired_eval_diff_mean": row.paired_eval.difference.mean if row.paired_eval else None,
                "paired_eval_diff_ci95": row.paired_eval.difference.half if row.paired_eval else None,
                "paired_eval_wins": row.paired_eval.wins if row.paired_eval else None,
                "equivalent_speedup": row.speedup,
                "wall_clock_speedup": row.wall_speedup,
            }
            for i in range(width):
                target = row.targets[i] if i < len(row.targets) else None
                record[f"target_{i + 1}"] = target.target if target else None
                record[f"steps_to_target_{i + 1}"] = target.steps if target else None
                record[f"seeds_reached_{i + 1}"] = target.reached if target else None
                record[f"speedup_{i + 1}"] = target.speedup if target else None
                record[f"speedup_{i + 1}_lower_bound"] = target.lower_bound if target else None
            record["seconds_per_step_plain"] = row.seconds_per_step
            record["seconds_per_run_step_batched"] = row.batched_seconds_per_run_step
            rows.append(record)
    return rows


def tuning_rows(tasks: Sequence[TaskResult], tune_on: str = "train") -> list[dict[str, Any]]:
    """One row per (task, optimizer, grid learning rate) (``tuning.csv``).

    The score column is ``mean_final_loss``, or ``mean_eval_loss`` when the tuning minimised the evaluation loss
    (``tune_on: eval``).
    """
    score_name = "mean_eval_loss" if tune_on == "eval" else "mean_final_loss"
    return [
        {
            "task": task.label,
            "optimizer": row.optimizer,
            "lr": lr,
            score_name: score,
            "diverged_seeds": diverged,
            "tuning_seeds": row.tuning.seeds,
            "chosen": lr == row.tuning.chosen,
        }
        for task in tasks
        for row in task.optimizers
        if row.tuning is not None
        for lr, score, diverged in zip(row.tuning.lrs, row.tuning.scores, row.tuning.diverged)
    ]


def curve_rows(tasks: Sequence[TaskResult]) -> list[dict[str, Any]]:
    """One row per (task, optimizer, step): mean training loss and its 95% interval (``curves.csv``)."""
    rows = []
    for task in tasks:
        for row in task.optimizers:
            mean, half = row.curve_interval
            n = row.curves.shape[0]
            for step in range(len(mean) if n else 0):
                rows.append(
                    {
                        "task": task.label,
                        "optimizer": row.optimizer,
                        "step": step,
                        "loss_mean": float(mean[step]),
                        "loss_ci95_low": float(mean[step] - half[step]),
                        "loss_ci95_high": float(mean[step] + half[step]),
                        "seeds": n,
                    }
                )
    return rows


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """CSV with a header from the first row's keys; None is an empty cell, floats at full precision."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()
