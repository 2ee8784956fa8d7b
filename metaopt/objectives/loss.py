"""The L2L meta-objective (Andrychowicz et al. 2016, eq. 3), registered as ``loss``.

The weighted sum of the optimizee's losses along the truncation, sum_{s=1..T} w_s f(theta_{t+s}), weights 1 by
default.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metaopt.inner.unroll import Trajectory
from metaopt.objectives.registry import Objective, ObjectiveConfig

__all__ = ["loss_objective", "optimizee_loss"]


def optimizee_loss(trajectory: Trajectory, weights: list[float] | None = None) -> Tensor:
    """sum_{s=1..T} w_s f(theta_{t+s}): the L2L meta-loss of one truncation.

    Args:
        trajectory: the truncation.
        weights: T weights; None for all ones.
    """
    losses = trajectory.losses[1:]  # losses[0] is at the detached start point: no meta-gradient
    if weights is None:
        return losses.sum()
    if len(weights) != losses.numel():
        raise ValueError(f"loss_weights has {len(weights)} entries but the truncation has {losses.numel()} steps")
    return (losses * torch.as_tensor(weights, dtype=losses.dtype, device=losses.device)).sum()


def loss_objective(config: ObjectiveConfig) -> Objective:
    """The factory of ``loss``: :func:`optimizee_loss` with the config's ``loss_weights``."""
    return lambda trajectory: optimizee_loss(trajectory, config.loss_weights)
