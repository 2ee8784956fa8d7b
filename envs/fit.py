"""The plain training loop: one model, one optimizer, one batch per step.

It is the reference every batched path is checked against, the runner of task recipes, and the loop that
``metaopt fit`` drives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from envs.optim import make_optimizer
from envs.task import Task

__all__ = ["FitResult", "fit"]

StepCallback = Callable[[int, float, nn.Module], None]


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    model: nn.Module
    """The trained model."""
    losses: list[float]
    """Training loss at each step, measured on that step's batch before the update."""
    eval_metrics: dict[str, float]
    """Evaluation-set metrics of the final model."""
    steps: int
    """Optimizer steps taken."""
    diverged: bool = False
    """True if a training loss became NaN or infinite (training stopped there)."""
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    """``(step, eval loss)`` at every evaluation made during training."""


def fit(
    task: Task,
    seed: int,
    *,
    optimizer: str | None = None,
    lr: float | None = None,
    steps: int | None = None,
    eval_every: int = 0,
    stop_below: float | None = None,
    callback: StepCallback | None = None,
) -> FitResult:
    """Train ``task.init_model(seed)`` on ``task.batches(seed)``; defaults come from ``task.recipe``.

    Args:
        task: the task, trained as given (for a problem family pass ``task.instance(seed)`` to train the problem a
            run with ``seed`` draws).
        seed: run seed: initial weights and batch order.
        optimizer: registry name; default the recipe's.
        lr: learning rate; default the recipe's.
        steps: maximum number of steps; default the recipe's.
        eval_every: evaluate every this many steps (0: only at the end, unless ``stop_below`` is set).
        stop_below: stop as soon as an evaluation finds eval loss <= this value.
        callback: called after every step with ``(step, loss, model)``.
    """
    recipe = task.recipe
    steps = recipe.steps if steps is None else steps
    if stop_below is not None and eval_every <= 0:
        eval_every = 1
    model = task.init_model(seed)
    opt = make_optimizer(optimizer or recipe.optimizer, model.parameters(), lr=recipe.lr if lr is None else lr)
    batches = task.batches(seed)
    losses: list[float] = []
    history: list[tuple[int, float]] = []
    diverged = False
    taken = 0
    if stop_below is not None:
        history.append((0, task.eval_loss(model)))
    for step in range(1, steps + 1):
        if history and stop_below is not None and history[-1][1] <= stop_below:
            break
        loss = task.loss(model, next(batches))
        value = float(loss.detach())
        losses.append(value)
        if not math.isfinite(value):
            diverged = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        taken = step
        if callback is not None:
            callback(step, value, model)
        if eval_every and step % eval_every == 0:
            history.append((step, task.eval_loss(model)))
    return FitResult(model, losses, task.eval_metrics(model), taken, diverged, history)
