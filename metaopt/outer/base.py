"""The outer-trainer interface: an estimator turns a batch of optimizees into a meta-gradient and metrics.

Given the rule and a batch of inner states (:class:`~metaopt.inner.unroll.InnerState`), an :class:`Estimator`
advances every optimizee by one truncation of T steps (they are modified in place and carried to the next call) and
returns a :class:`MetaGradient`: one gradient per weight of the rule, the metrics of the truncation as
``dict[str, float]`` and, optionally, tensors to show as histograms. It never touches the meta-optimizer, the
rule's ``.grad`` or the run's logs: the training loop (:mod:`metaopt.training.loop`) clips, skips non-finite
gradients, steps and writes the metrics. Estimators that draw random numbers derive them from ``setup.seed`` and
the ``meta_step`` they are given, so a resumed run draws the same ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from metaopt.inner.unroll import InnerState, advance
from metaopt.objectives import Objective
from metaopt.rules import LearnedRule

__all__ = ["Estimator", "EstimatorSetup", "MetaGradient", "NoOptions"]


@dataclass
class NoOptions:
    """The config of an estimator without options."""


@dataclass(frozen=True)
class EstimatorSetup:
    """What the training loop tells every estimator: the truncation, the objective and the run's settings."""

    truncation: int
    """T: inner steps per estimate."""
    objective: Objective
    """The meta-objective of one trajectory."""
    second_order: bool = False
    """Backpropagate through the optimizee's gradients too (for estimators that differentiate the unroll)."""
    seed: int = 0
    """Seed of the run (for estimators that draw perturbations)."""


@dataclass(frozen=True)
class MetaGradient:
    """An estimate of the meta-gradient and what to report about it."""

    grads: tuple[Tensor | None, ...]
    """One per tensor of ``rule.parameters()``, in order; None where the meta-loss does not depend on it."""
    metrics: dict[str, float]
    """Scalars of the truncation (``loss``: mean meta-loss, ``final_loss``: mean optimizee loss at its end, ...)."""
    histograms: dict[str, Tensor] = field(default_factory=dict)
    """Tensors the loop may show as histograms (``updates``: the last optimizee's steps)."""


class Estimator(ABC):
    """An outer trainer. Subclasses set ``Config`` (a dataclass of their options) and implement :meth:`estimate`.

    Args:
        config: the estimator's options (``estimator.options`` of ``metaopt train``); default ``Config()``.
        setup: the truncation, objective and run settings.
    """

    Config: ClassVar[type] = NoOptions
    """Dataclass of the estimator's options."""
    slot_offset: int = 0
    """Place in the meta-batch of the first optimizee :meth:`estimate` gets: each rank of a data-parallel run passes a
    contiguous share, and the training loop sets this so that whatever an estimator draws per optimizee (ES noise) is
    keyed by ``slot_offset + i``, the same on any number of ranks."""

    def __init__(self, config: Any, setup: EstimatorSetup):
        self.config = config if config is not None else self.Config()
        self.setup = setup

    def advance(self, rule: LearnedRule, inners: Sequence[InnerState], steps: Sequence[int]) -> None:
        """Move each optimizee on by its number of plain steps of the rule, no meta-graph (the start offsets).

        One after another with :func:`~metaopt.inner.unroll.advance`; an estimator that runs its optimizees together
        may advance them together too.
        """
        for inner, count in zip(inners, steps, strict=True):
            if count:
                advance(inner, count)

    @abstractmethod
    def estimate(self, rule: LearnedRule, inners: Sequence[InnerState], *, meta_step: int) -> MetaGradient:
        """Advance ``inners`` by one truncation and estimate the gradient of their mean meta-loss.

        Args:
            rule: the live rule (its weights are the meta-parameters).
            inners: the optimizees of this meta-step (modified: each ends T steps further); under data parallelism,
                this rank's share, from meta-batch slot :attr:`slot_offset` on. The estimate and every metric are
                means over them: the loop averages the ranks' estimates weighted by their shares.
            meta_step: the number of meta-steps taken before this one.
        """
