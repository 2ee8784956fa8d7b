"""Validation of a learned rule during meta-training: its final losses against Adam tuned by the harness's rules.

The rule runs as the ``learned`` optimizer on held-out seeds (``VAL_SEED_BASE + k``) of every task of the family;
Adam's learning rate is tuned once per task on the tuning seeds (:func:`metaopt.compare.tuned_baseline`: a log grid,
never a rate that diverged) and its scores are kept for the rest of the run (and in the resume file). A run's score
is the harness's final loss, the mean training loss over the last ``final_window`` of the K steps (what
meta-training minimises); the evaluation-set loss is reported beside it.

Meta-training *went wrong* when the best validation final loss it reached is more than :data:`FAR_WORSE_RATIO` (2)
times tuned Adam's, or is not finite (:func:`far_worse_than_adam`): a learned optimizer that cannot get within a
factor 2 of a tuned baseline on the tasks it was trained on has diverged or not learned, whatever ``best.pt`` holds.
The command then says so (a ``WARNING:`` line and the report) and the metrics carry ``far_worse_than_adam``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from envs.task import Task
from envs.tooling.config import TaskConfig
from envs.tooling.runs import atomic_write_text
from metaopt.compare.baseline import evaluate_runs, run_final_loss, tuned_baseline
from metaopt.rules import LearnedRule
from metaopt.training.config import TUNE_SEED_BASE, VAL_SEED_BASE, TrainConfig

__all__ = ["FAR_WORSE_RATIO", "baseline_cache", "far_worse_than_adam", "task_key", "tune_adam", "validate"]

FAR_WORSE_RATIO = 2.0
"""Meta-training went wrong when its best validation final loss exceeds tuned Adam's by more than this factor."""


def far_worse_than_adam(learned: float, adam: float) -> bool:
    """Whether a learned final loss is far worse than tuned Adam's: not finite, or above ``FAR_WORSE_RATIO`` x Adam's.

    Written as ``learned - adam > (FAR_WORSE_RATIO - 1) |adam|``, which is ``learned > 2 adam`` for the usual
    positive losses and stays meaningful for a negative one. False when Adam's own loss is not finite (nothing to
    compare with).
    """
    if not math.isfinite(adam):
        return False
    return not math.isfinite(learned) or learned - adam > (FAR_WORSE_RATIO - 1) * abs(adam)


def task_key(task: TaskConfig) -> str:
    """The key of a task of the family in the baseline table: ``name(option=value, ...)``."""
    return f"{task.name}({', '.join(f'{k}={v}' for k, v in sorted(task.options.items()))})"


def baseline_cache() -> Path | None:
    """The file of tuned Adam baselines shared by runs; None when ``METAOPT_CACHE=off``.

    ``$METAOPT_CACHE/adam_baselines.json``, by default under ``~/.cache/metaopt``.
    """
    root = os.environ.get("METAOPT_CACHE", str(Path.home() / ".cache" / "metaopt"))
    return None if root in ("off", "") else Path(root) / "adam_baselines.json"


def tune_adam(cfg: TrainConfig, task: Task) -> dict[str, float]:
    """Adam tuned by the harness's rules on the tuning seeds, and its mean losses on the validation seeds.

    The result is a function of the task (its spec, device and dtype), the seeds, the steps, the grid and the final
    window; it is kept in :func:`baseline_cache` under all of them (and the torch version), so a second run with the
    same settings, a resumed one, or another meta-training config over the same task skips the tuning. A cache that
    cannot be read or written is ignored.
    """
    val_seeds = [VAL_SEED_BASE + k for k in range(cfg.val_seeds)]
    tune_seeds = [TUNE_SEED_BASE + k for k in range(cfg.tune_seeds)]
    key = json.dumps({"task": task.spec, "device": str(task.device), "dtype": str(task.dtype), "tune": tune_seeds,
                      "val": val_seeds, "steps": cfg.steps, "grid": list(cfg.lr_grid), "window": cfg.final_window,
                      "torch": torch.__version__}, sort_keys=True, default=str)  # fmt: skip
    path = baseline_cache()
    table: dict[str, dict[str, float]] = {}
    if path is not None:
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        if key in table:
            return {name: float(value) for name, value in table[key].items()}
    adam = tuned_baseline(task, "adam", tune_seeds, val_seeds, cfg.steps, cfg.lr_grid, cfg.final_window)
    result = {"lr": adam.lr or math.nan, "val": adam.mean_final_loss, "val_eval": adam.mean_eval_loss}
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({**table, key: result}, sort_keys=True))
        except OSError:
            pass  # a read-only or full cache costs the tuning again next time, nothing else
    return result


def validate(
    cfg: TrainConfig, tasks: list[Task], rule: LearnedRule, baseline: dict[str, dict[str, float]]
) -> dict[str, float]:
    """Final training and evaluation losses of the rule and of tuned Adam on the validation seeds.

    Means over seeds, then over the tasks of the family; checkpoints are selected by the training loss.

    Args:
        cfg: the configuration.
        tasks: the family's tasks, in ``cfg.tasks`` order.
        rule: the live rule.
        baseline: tuned Adam by :func:`task_key`; tasks missing from it are tuned now and added.
    """
    val_seeds = [VAL_SEED_BASE + k for k in range(cfg.val_seeds)]
    totals = dict.fromkeys(("learned_final_loss", "learned_eval_loss", "adam_final_loss", "adam_eval_loss"), 0.0)
    for task_cfg, task in zip(cfg.tasks, tasks):
        key = task_key(task_cfg)
        if key not in baseline:
            baseline[key] = tune_adam(cfg, task)
        runs = evaluate_runs(task, "learned", val_seeds, cfg.steps, None, {"rule": rule})
        totals["learned_final_loss"] += sum(run_final_loss(r, cfg.final_window) for r in runs) / len(runs)
        totals["learned_eval_loss"] += sum(r.eval_loss for r in runs) / len(runs)
        totals["adam_final_loss"] += baseline[key]["val"]
        totals["adam_eval_loss"] += baseline[key]["val_eval"]
    metrics = {key: value / len(tasks) for key, value in totals.items()}
    metrics["learned_over_adam"] = metrics["learned_final_loss"] / metrics["adam_final_loss"]
    return metrics
