"""Meta-objectives by name: a factory ``ObjectiveConfig -> Objective`` per name, chosen by ``objective.name``.

An :data:`Objective` is a scalar function of a :class:`~metaopt.inner.unroll.Trajectory` that meta-training
minimises, differentiable with respect to the rule's weights. A new objective is one module with its factory and one
``register_objective`` line (the package's own register in :mod:`metaopt.objectives`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from envs.errors import InvalidValue
from envs.tooling.config import check_range
from envs.tooling.registry import Choice, Registry
from metaopt.inner.unroll import Trajectory

__all__ = [
    "OBJECTIVES",
    "ImitationOptions",
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
class ObjectiveConfig(Choice):
    """Which meta-objective, ``{name, options}``, and the weights every objective gives the steps of a truncation."""

    registry: ClassVar[str] = "metaopt.objectives.registry:OBJECTIVES"

    name: str = "loss"
    """Objective name: loss (L2L, the weighted sum of optimizee losses, or of their logarithms with options.log),
    eval_loss (the same sum on held-out batches; the tasks need a held-out split, options.valid_size for the data
    tasks), geodesic (imitation of geodesic targets plus options.loss_weight times the L2L term; needs targets=),
    teacher (the same imitation of the base optimizer's own iterates of each window; needs targets=) or one added
    with register_objective."""
    options: dict[str, Any] = field(default_factory=dict)
    """The objective's own options (loss and eval_loss: ``log``; geodesic and teacher: ``loss_weight``)."""
    loss_weights: list[float] | None = None
    """Weights w_1..w_T of the optimizee losses in a truncation (None: all 1, as in the paper)."""

    def __post_init__(self) -> None:
        check_range(self, "loss_weights", low=0, optional=True)
        if self.name not in OBJECTIVES:
            return  # named by make_objective and the schemas that check names, with the valid ones
        config = OBJECTIVES.entry(self.name).config
        if config is None:
            if self.options:
                message = f"is not read: objective {self.name!r} takes no options, got {dict(self.options)}"
                raise InvalidValue(type(self), "options", dict(self.options), message)
            return
        try:
            own = OBJECTIVES.config(self.name, self.options)
        except InvalidValue as exc:  # name the option by its full key
            raise InvalidValue(type(self), f"options.{exc.key}", exc.value, exc.message) from None
        except ValueError as exc:  # an unknown option
            raise InvalidValue(type(self), "options", dict(self.options), str(exc)) from None
        self.options = {f.name: getattr(own, f.name) for f in dataclasses.fields(own)}  # spelled out

    @staticmethod
    def upgrade_node(node: MutableMapping[str, Any], prefix: str, notes: dict[str, str]) -> None:
        """Read ``loss_weight`` beside the name (the older shape) as an option of the objectives that read it."""
        if "loss_weight" not in node:
            return
        value, name = node.pop("loss_weight"), node.get("name")
        if name in OBJECTIVES and "loss_weight" not in _option_names(str(name)):  # never read by it: dropped
            notes[f"{prefix}loss_weight"] = f"dropped (not read by {name})"
            return
        node["options"] = {**{k: v for k, v in (node.get("options") or {}).items()}, "loss_weight": value}
        notes[f"{prefix}loss_weight"] = f"{prefix}options.loss_weight"


def _option_names(name: str) -> set[str]:
    config = OBJECTIVES.entry(name).config
    return set() if config is None else {f.name for f in dataclasses.fields(config)}


@dataclass
class ImitationOptions:
    """Options of the imitation objectives (``geodesic``, ``teacher``)."""

    loss_weight: float = 0.0
    """lambda, the weight of the L2L loss term added to the imitation loss (0: imitation only)."""

    def __post_init__(self) -> None:
        check_range(self, "loss_weight", low=0)


OBJECTIVES: Registry[Callable[[ObjectiveConfig], Objective]] = Registry("objective")
"""The registered objectives: a factory each, flags ``held_out`` and ``targets``."""


def register_objective(
    name: str,
    factory: Callable[[ObjectiveConfig], Objective],
    *,
    config: type | None = None,
    held_out: bool = False,
    targets: bool = False,
) -> None:
    """Make ``ObjectiveConfig(name=name, ...)`` build ``factory(config)``.

    ``config``: the dataclass of the objective's own options (``objective.options``; the factory reads them with
    ``config.config_as(ItsOptions)``), None for an objective without any.
    ``held_out``: the objective scores held-out losses, so optimizees are started with held-out batches.
    ``targets``: the objective imitates target points, so meta-training needs a ``targets=`` dataset.

    Raises:
        ValueError: ``name`` is taken by another objective.
    """
    OBJECTIVES.register(name, factory, config=config, held_out=held_out, targets=targets)


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
