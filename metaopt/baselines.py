"""Hand-designed baselines for validation: plain training loops and a learning-rate tuner on a log grid.

Every optimizer, learned or not, is scored by the same loop (:func:`train_plain`): for a run seed, the problem
``task.instance(seed)``, the initial weights ``init_model(seed)`` and the batches ``batches(seed)`` are the same for
every optimizer (paired comparison). The score is the training objective after ``steps`` steps, f(theta_K) on the
next batch of the stream (the exact loss for full-batch tasks such as ``quadratic``), as the L2L paper compares
optimizers on the optimizee's training loss; the evaluation-set loss is kept beside it, since an optimizer that
trains faster can also overfit sooner. A run whose loss becomes NaN or infinite scores ``inf``. The meta-trainer
validates against :func:`tune_lr`'s tuned Adam; the comparison harness of issue 3 is meant to take this role later,
through this one function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from envs.optim import make_optimizer
from envs.task import Task

__all__ = ["LR_GRID", "OptimizerFactory", "PlainRun", "mean_final_loss", "train_plain", "tune_lr"]

OptimizerFactory = Callable[[Iterable[Tensor]], torch.optim.Optimizer]
"""Builds an optimizer over a model's parameters."""

LR_GRID = tuple(10.0 ** (k / 2) for k in range(-8, 1))
"""Learning rates 1e-4 .. 1 in half decades (9 values)."""


@dataclass
class PlainRun:
    """One training run in a plain loop."""

    losses: list[float]
    """Training loss at each step, on that step's batch, before the update."""
    final_loss: float
    """Training loss after the last step, on the next batch of the stream (``inf`` if the run diverged)."""
    eval_loss: float
    """Evaluation-set loss after the last step (``inf`` if the run diverged)."""


def train_plain(task: Task, seed: int, factory: OptimizerFactory, steps: int) -> PlainRun:
    """Train ``task.instance(seed)`` from ``init_model(seed)`` on ``batches(seed)`` for ``steps`` steps."""
    problem = task.instance(seed)
    model = problem.init_model(seed)
    optimizer = factory(model.parameters())
    batches = problem.batches(seed)
    losses: list[float] = []
    for _ in range(steps):
        loss = problem.loss(model, next(batches))
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            return PlainRun(losses, math.inf, math.inf)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = float(problem.loss(model, next(batches)))
    evaluated = problem.eval_loss(model)
    return PlainRun(
        losses, final if math.isfinite(final) else math.inf, evaluated if math.isfinite(evaluated) else math.inf
    )


def mean_final_loss(task: Task, seeds: Sequence[int], factory: OptimizerFactory, steps: int) -> float:
    """Mean of :attr:`PlainRun.final_loss` over ``seeds``."""
    return sum(train_plain(task, seed, factory, steps).final_loss for seed in seeds) / len(seeds)


def tune_lr(
    task: Task, optimizer: str, seeds: Sequence[int], steps: int, grid: Sequence[float] = LR_GRID
) -> tuple[float, float]:
    """The learning rate of the registered ``optimizer`` with the lowest mean final loss over ``seeds``.

    Returns:
        ``(best lr, its mean final loss on the tuning seeds)``; ties go to the smaller learning rate.
    """
    scores = [
        (mean_final_loss(task, seeds, lambda params, lr=lr: make_optimizer(optimizer, params, lr=lr), steps), lr)
        for lr in sorted(grid)
    ]
    best_score, best_lr = min(scores, key=lambda item: item[0])
    return best_lr, best_score
