"""The training loop: one model, one optimizer, one batch per step.

It is the one plain loop of the framework: the runner of task recipes (``metaopt fit``), the reference every batched
path is checked against (the comparison harness's plain runs), the recorder of base-optimizer trajectories (geodesic
targets), and the loop that warms a learned optimizer up or lets it run on its own (meta-training). Callers that need
more than a recipe hand it what they have: a model to start from (``model=``), an optimizer object (``optimizer=``,
e.g. a learned optimizer holding a warm state), a batch stream positioned mid-run (``batches=``), and a ``callback``
that sees every step (to record iterates or to move the parameters). Every step does the same thing: the training
loss on that step's batch *before* the update, a stop at the first non-finite loss (kept in the curve), then
``zero_grad``, ``backward``, ``step``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from envs.task import Batch, Task
from envs.training.optim import get_optimizer_spec, make_optimizer

__all__ = ["FitResult", "StepCallback", "fit"]

StepCallback = Callable[[int, float, nn.Module], None]
"""Called after every completed step with ``(step, loss, model)``; ``step`` counts from 1."""


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    model: nn.Module
    """The trained model."""
    losses: list[float]
    """Training loss at each step, measured on that step's batch before the update."""
    eval_metrics: dict[str, float]
    """Evaluation-set metrics of the final model (empty when ``fit`` was asked not to evaluate)."""
    steps: int
    """Optimizer steps taken."""
    diverged: bool = False
    """True if a training loss became NaN or infinite (training stopped there)."""
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    """``(step, eval loss)`` at every evaluation made during training."""
    step_seconds: list[float] = field(default_factory=list)
    """Wall time of each completed step: batch, forward, backward, optimizer step (not the callback)."""


def fit(
    task: Task,
    seed: int | None = None,
    *,
    optimizer: str | torch.optim.Optimizer | None = None,
    lr: float | None = None,
    steps: int | None = None,
    model: nn.Module | None = None,
    batches: Iterator[Batch] | None = None,
    eval_every: int = 0,
    stop_below: float | None = None,
    callback: StepCallback | None = None,
    evaluate: bool = True,
) -> FitResult:
    """Train ``task.init_model(seed)`` on ``task.batches(seed)``; defaults come from ``task.recipe``.

    Args:
        task: the task, trained as given (for a problem family pass ``task.instance(seed)`` to train the problem a
            run with ``seed`` draws).
        seed: run seed: initial weights and batch order; may be omitted when ``model`` and ``batches`` are given.
        optimizer: a registry name (default the recipe's), or an optimizer already built over ``model``'s
            parameters (then ``lr`` must be None).
        lr: learning rate of a named optimizer; default the recipe's.
        steps: maximum number of steps; default the recipe's.
        model: train this model instead of a fresh ``task.init_model(seed)``.
        batches: take the training batches from this stream instead of ``task.batches(seed)``.
        eval_every: evaluate every this many steps (0: only at the end, unless ``stop_below`` is set).
        stop_below: stop as soon as an evaluation finds eval loss <= this value.
        callback: called after every step with ``(step, loss, model)``.
        evaluate: compute the evaluation metrics of the final model (``FitResult.eval_metrics``).

    Raises:
        ValueError: ``lr`` with an optimizer object, or no ``seed`` where one is needed.
    """
    recipe = task.recipe
    steps = recipe.steps if steps is None else steps
    if stop_below is not None and eval_every <= 0:
        eval_every = 1
    if seed is None and (model is None or batches is None):
        raise ValueError("fit needs a seed unless both model= and batches= are given")
    if model is None:
        model = task.init_model(seed)  # type: ignore[arg-type]
    if isinstance(optimizer, torch.optim.Optimizer):
        if lr is not None:
            raise ValueError("lr= applies to a named optimizer; an optimizer object already has its settings")
        opt = optimizer
    else:
        name = optimizer or recipe.optimizer
        horizon = get_optimizer_spec(name).with_horizon({}, steps)  # a schedule spans this run
        opt = make_optimizer(name, model.parameters(), lr=recipe.lr if lr is None else lr, **horizon)
    if batches is None:
        batches = task.batches(seed)  # type: ignore[arg-type]
    losses: list[float] = []
    history: list[tuple[int, float]] = []
    seconds: list[float] = []
    diverged = False
    taken = 0
    if stop_below is not None:
        history.append((0, task.eval_loss(model)))
    for step in range(1, steps + 1):
        if history and stop_below is not None and history[-1][1] <= stop_below:
            break
        started = time.perf_counter()
        loss = task.loss(model, next(batches))
        value = float(loss.detach())
        losses.append(value)
        if not math.isfinite(value):
            diverged = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seconds.append(time.perf_counter() - started)
        taken = step
        if callback is not None:
            callback(step, value, model)
        if eval_every and step % eval_every == 0:
            history.append((step, task.eval_loss(model)))
    metrics = task.eval_metrics(model) if evaluate else {}
    return FitResult(model, losses, metrics, taken, diverged, history, seconds)
