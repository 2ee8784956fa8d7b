"""Tuned baselines as a library call, with the harness's rules: for other commands (meta-training validation).

:func:`tuned_baseline` tunes a registered optimizer's learning rate on a grid over tuning seeds (mean final loss,
never a rate that diverged on any tuning seed; :func:`~metaopt.compare.stats.choose_lr`) and then runs it on
evaluation seeds; :func:`evaluate_runs` runs any registered optimizer (the learned one too, by name and options) on
seeds. Runs are batched where the optimizer has a functional twin and plain loops otherwise, exactly as in
``metaopt compare``, and a run's *final loss* is the harness's: the mean training loss over its last ``window`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.task import Task
from envs.training.functional import functional_from_spec
from envs.training.optim import get_optimizer_spec
from metaopt.compare.runner import RunResult, RunSpec, run_batched, run_plain
from metaopt.compare.stats import Tuning, choose_lr, final_loss

__all__ = ["Baseline", "evaluate_runs", "run_final_loss", "tuned_baseline"]


def run_final_loss(result: RunResult, window: int) -> float:
    """The harness's final loss of one run; ``inf`` for a run that diverged."""
    return math.inf if result.diverged else final_loss(result.losses, window)


def evaluate_runs(
    task: Task,
    optimizer: str,
    seeds: Sequence[int],
    steps: int,
    lr: float | None,
    options: dict[str, Any] | None = None,
) -> list[RunResult]:
    """Train ``optimizer`` (a registry name) at ``lr`` on each seed; batched when it has a functional twin."""
    twin = functional_from_spec(get_optimizer_spec(optimizer), options) if lr is not None else None
    specs = [RunSpec(seed, lr) for seed in seeds]
    if twin is not None:
        return run_batched(task, specs, steps, twin)
    return [run_plain(task, spec, steps, optimizer, options) for spec in specs]


@dataclass(frozen=True)
class Baseline:
    """A tuned optimizer and its runs on the evaluation seeds."""

    optimizer: str
    """Registry name."""
    tuning: Tuning
    """The grid, the tuning scores and the chosen learning rate (None if every rate diverged)."""
    runs: tuple[RunResult, ...]
    """One run per evaluation seed at the chosen learning rate (empty if none was chosen)."""
    window: int
    """Steps averaged into a run's final loss."""

    @property
    def lr(self) -> float | None:
        """The chosen learning rate."""
        return self.tuning.chosen

    @property
    def mean_final_loss(self) -> float:
        """Mean final loss over the evaluation seeds (``inf`` if any run diverged or none was made)."""
        finals = [run_final_loss(r, self.window) for r in self.runs]
        return float(np.mean(finals)) if finals else math.inf

    @property
    def mean_eval_loss(self) -> float:
        """Mean evaluation-set loss of the final weights over the evaluation seeds."""
        return float(np.mean([r.eval_loss for r in self.runs])) if self.runs else math.inf


def tuned_baseline(
    task: Task,
    optimizer: str,
    tuning_seeds: Sequence[int],
    eval_seeds: Sequence[int],
    steps: int,
    lr_grid: Sequence[float],
    window: int = 10,
) -> Baseline:
    """Tune ``optimizer``'s learning rate over ``tuning_seeds`` and run it on ``eval_seeds`` (see the module)."""
    finals = np.zeros((len(lr_grid), len(tuning_seeds)))
    diverged = np.zeros((len(lr_grid), len(tuning_seeds)), dtype=bool)
    for i, lr in enumerate(lr_grid):
        for j, result in enumerate(evaluate_runs(task, optimizer, tuning_seeds, steps, lr)):
            finals[i, j] = final_loss(result.losses, window)
            diverged[i, j] = result.diverged
    tuning = choose_lr(list(lr_grid), finals, diverged)
    runs = () if tuning.chosen is None else tuple(evaluate_runs(task, optimizer, eval_seeds, steps, tuning.chosen))
    return Baseline(optimizer, tuning, runs, window)
