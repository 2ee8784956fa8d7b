"""Meta-objectives: functions of a :class:`~metaopt.unroll.Trajectory` that meta-training minimises.

``loss`` is the L2L objective (Andrychowicz et al. 2016, eq. 3): the weighted sum of the optimizee's losses along the
truncation, sum_{s=1..T} w_s f(theta_{t+s}), weights 1 by default. More objectives join through
:func:`register_objective` with a factory ``ObjectiveConfig -> Objective``; the geodesic-imitation objective of
DESIGN.md section 7 (distance of ``trajectory.iterates`` to target points) is meant to plug in here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from metaopt.unroll import Trajectory

__all__ = ["Objective", "ObjectiveConfig", "list_objectives", "make_objective", "optimizee_loss", "register_objective"]

Objective = Callable[[Trajectory], Tensor]
"""A scalar meta-loss of one trajectory, differentiable with respect to the network's weights."""


@dataclass
class ObjectiveConfig:
    """Which meta-objective, with its options."""

    name: str = "loss"
    """Objective name: loss (L2L, the weighted sum of optimizee losses), geodesic (imitation of geodesic targets
    plus loss_weight times the L2L term; needs targets=) or one added with register_objective."""
    loss_weights: list[float] | None = None
    """Weights w_1..w_T of the optimizee losses in a truncation (None: all 1, as in the paper)."""
    loss_weight: float = 0.0
    """geodesic only: lambda, the weight of the L2L loss term added to the imitation loss (0: geodesic only)."""


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


_OBJECTIVES: dict[str, Callable[[ObjectiveConfig], Objective]] = {}


def register_objective(name: str, factory: Callable[[ObjectiveConfig], Objective]) -> None:
    """Make ``ObjectiveConfig(name=name, ...)`` build ``factory(config)``."""
    _OBJECTIVES[name] = factory


def list_objectives() -> list[str]:
    """Names of the registered objectives."""
    return sorted(_OBJECTIVES)


def make_objective(config: ObjectiveConfig) -> Objective:
    """The objective a config names; a clear error listing the valid names otherwise."""
    try:
        factory = _OBJECTIVES[config.name]
    except KeyError:
        raise ValueError(f"unknown objective {config.name!r}; valid: {', '.join(list_objectives())}") from None
    return factory(config)


register_objective("loss", lambda config: lambda trajectory: optimizee_loss(trajectory, config.loss_weights))
