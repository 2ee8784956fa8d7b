"""Meta-objectives by name: a factory ``ObjectiveConfig -> Objective`` per name, chosen by ``objective.name``.

An :data:`Objective` is a scalar function of a :class:`~metaopt.inner.unroll.Trajectory` that meta-training
minimises, differentiable with respect to the rule's weights. A new objective is one module with its factory and one
``register_objective`` line (the package's own register in :mod:`metaopt.objectives`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from envs.tooling.config import check_range
from envs.tooling.registry import Registry
from metaopt.inner.unroll import Trajectory

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ObjectiveConfig",
    "list_objectives",
    "make_objective",
    "needs_held_out",
    "needs_targets",
    "register_objective",
]

Objective = Callable[[Trajectory], Tensor]
"""A scalar meta-loss of one trajectory, differentiable with respect to the rule's weights."""


@dataclass
class ObjectiveConfig:
    """Which meta-objective, with its options."""

    name: str = "loss"
    """Objective name: loss (L2L, the weighted sum of optimizee losses), eval_loss (the same sum on held-out
    batches; the tasks need a held-out split, options.valid_size for the data tasks), geodesic (imitation of
    geodesic targets plus loss_weight times the L2L term; needs targets=), teacher (the same imitation of the base
    optimizer's own iterates of each window; needs targets=) or one added with register_objective."""
    loss_weights: list[float] | None = None
    """Weights w_1..w_T of the optimizee losses in a truncation (None: all 1, as in the paper)."""
    loss_weight: float = 0.0
    """geodesic and teacher: lambda, the weight of the L2L loss term added to the imitation loss (0: geodesic only)."""

    def __post_init__(self) -> None:
        check_range(self, "loss_weights", low=0, optional=True)
        check_range(self, "loss_weight", low=0)


OBJECTIVES: Registry[Callable[[ObjectiveConfig], Objective]] = Registry("objective")
"""The registered objectives: a factory each, flags ``held_out`` and ``targets``."""


def register_objective(
    name: str, factory: Callable[[ObjectiveConfig], Objective], *, held_out: bool = False, targets: bool = False
) -> None:
    """Make ``ObjectiveConfig(name=name, ...)`` build ``factory(config)``.

    ``held_out``: the objective scores held-out losses, so optimizees are started with held-out batches.
    ``targets``: the objective imitates target points, so meta-training needs a ``targets=`` dataset.

    Raises:
        ValueError: ``name`` is taken by another objective.
    """
    OBJECTIVES.register(name, factory, held_out=held_out, targets=targets)


def needs_targets(config: ObjectiveConfig) -> bool:
    """Whether the objective a config names imitates target points (it needs a ``targets=`` dataset)."""
    return bool(OBJECTIVES.flag(config.name, "targets"))


def needs_held_out(config: ObjectiveConfig) -> bool:
    """Whether the objective a config names scores held-out losses (``Trajectory.valid_losses``)."""
    return bool(OBJECTIVES.flag(config.name, "held_out"))


def list_objectives() -> list[str]:
    """Names of the registered objectives."""
    return OBJECTIVES.names()


def make_objective(config: ObjectiveConfig) -> Objective:
    """The objective a config names; a clear error listing the valid names otherwise."""
    return OBJECTIVES.get(config.name)(config)
