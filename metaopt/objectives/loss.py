"""The L2L meta-objective (Andrychowicz et al. 2016, eq. 3), ``loss``, and its held-out twin ``eval_loss``.

``loss`` is the weighted sum of the optimizee's training losses along the truncation, sum_{s=1..T} w_s f(theta_{t+s}),
weights 1 by default. ``eval_loss`` is the same sum with each iterate scored on a fresh batch of the task's held-out
split (``Task.valid_batches``; data tasks make one with ``valid_size``) instead of its next training batch: the
meta-objective of learned_optimization's and VeLO's generalisation-aware training, which rewards a rule for what it
does to unseen data rather than for fitting the training stream.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metaopt.inner.unroll import Trajectory
from metaopt.objectives.registry import Objective, ObjectiveConfig

__all__ = ["eval_loss_objective", "heldout_loss", "loss_objective", "optimizee_loss"]


def optimizee_loss(trajectory: Trajectory, weights: list[float] | None = None) -> Tensor:
    """sum_{s=1..T} w_s f(theta_{t+s}): the L2L meta-loss of one truncation.

    Args:
        trajectory: the truncation.
        weights: T weights; None for all ones.
    """
    return _weighted(trajectory.losses[1:], weights)  # losses[0] is at the detached start point: no meta-gradient


def heldout_loss(trajectory: Trajectory, weights: list[float] | None = None) -> Tensor:
    """sum_{s=1..T} w_s f_valid(theta_{t+s}): the held-out meta-loss of one truncation.

    Raises:
        ValueError: the trajectory has no held-out losses (its optimizee was started without held-out batches).
    """
    if trajectory.valid_losses is None:
        raise ValueError("the eval_loss objective needs held-out losses: start the optimizees with held_out=True")
    return _weighted(trajectory.valid_losses, weights)


def _weighted(losses: Tensor, weights: list[float] | None) -> Tensor:
    if weights is None:
        return losses.sum()
    if len(weights) != losses.numel():
        raise ValueError(f"loss_weights has {len(weights)} entries but the truncation has {losses.numel()} steps")
    return (losses * torch.as_tensor(weights, dtype=losses.dtype, device=losses.device)).sum()


def loss_objective(config: ObjectiveConfig) -> Objective:
    """The factory of ``loss``: :func:`optimizee_loss` with the config's ``loss_weights``."""
    return lambda trajectory: optimizee_loss(trajectory, config.loss_weights)


def eval_loss_objective(config: ObjectiveConfig) -> Objective:
    """The factory of ``eval_loss``: :func:`heldout_loss` with the config's ``loss_weights``."""
    return lambda trajectory: heldout_loss(trajectory, config.loss_weights)
