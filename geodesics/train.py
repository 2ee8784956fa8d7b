"""Endpoints for DSS: a fresh model trained with its task's recipe until its evaluation loss is below a threshold."""

from __future__ import annotations

from torch import Tensor

from envs.fit import fit
from envs.task import Task
from geodesics.space import ParamSpace

__all__ = ["ThresholdNotReached", "train_to_threshold"]


class ThresholdNotReached(ValueError):
    """Training ran out of steps before the evaluation loss reached the threshold."""


def train_to_threshold(
    task: Task,
    seed: int,
    threshold: float,
    *,
    max_steps: int | None = None,
    eval_every: int = 10,
    optimizer: str | None = None,
    lr: float | None = None,
) -> Tensor:
    """Train ``task.init_model(seed)`` until ``task.eval_loss <= threshold``; return its flat parameters ``(P,)``.

    Training stops at the first evaluation below the threshold, so the model sits just inside the level set, as in
    the DSS paper's experiments.

    Args:
        task: the task (its recipe gives the optimizer and learning rate unless overridden).
        seed: seed of the initial weights and the batch order.
        threshold: the evaluation loss to reach.
        max_steps: step budget (default five times the recipe's steps).
        eval_every: evaluate every this many steps.
        optimizer: optimizer name (default the recipe's).
        lr: learning rate (default the recipe's).

    Raises:
        ThresholdNotReached: with the best loss reached and what to change.
    """
    budget = max_steps if max_steps is not None else 5 * task.recipe.steps
    result = fit(task, seed, optimizer=optimizer, lr=lr, steps=budget, eval_every=eval_every, stop_below=threshold)
    final = result.eval_history[-1][1] if result.eval_history else result.eval_metrics["loss"]
    if result.diverged or final > threshold:
        best = min((loss for _, loss in result.eval_history), default=final)
        raise ThresholdNotReached(
            f"task {task.name!r}, seed {seed}: evaluation loss {final:.6g} (best {best:.6g}) after {result.steps} "
            f"steps is above the threshold {threshold:.6g}"
            + (" (training diverged)" if result.diverged else "")
            + ". Raise the step budget (max_steps), raise the threshold, or change the learning rate."
        )
    return ParamSpace(task, model=result.model).flatten(result.model)
