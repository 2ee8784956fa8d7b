"""Truncated backpropagation through the ``higher`` unroll (Andrychowicz et al. 2016, section 3).

Registered as ``truncated_backprop``. Each optimizee is unrolled T steps with the differentiable twin of the learned
optimizer (:func:`~metaopt.inner.unroll.unroll`); its meta-loss, divided by the batch size, is backpropagated to the
rule's weights, and the gradients of the batch are summed in order (as successive ``backward()`` calls would accumulate
them). With ``second_order`` false the optimizee's gradients enter the rule detached (the paper's simplification);
parameters and rule state are carried, detached, into the next truncation, so the estimate is biased by the truncation,
as in the paper.

With ``optimizees: stack`` the meta-batch is unrolled together (:func:`~metaopt.inner.stacked.unroll_many`: one rule
call per step for all optimizees, same-shape ones evaluated as one stacked model) and the mean meta-loss is
backpropagated once: the same meta-gradient to float rounding, not bit for bit, so ``loop`` stays the default. The
start offsets' plain steps are then taken together too (:func:`~metaopt.inner.stacked.advance_many`). A rule that is
not :attr:`~metaopt.rules.LearnedRule.separable_by_model` is unrolled in the loop whatever the option says.

With ``compile: true`` (and ``optimizees: loop``) each optimizee is unrolled through one compiled functional step per
optimizee structure (:class:`~metaopt.inner.compiled.CompiledUnroll`): the same meta-gradient to float32 rounding,
faster per truncation once each structure has compiled, which takes tens of seconds per structure on a first run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from typing_extensions import override

from envs.errors import InvalidValue
from metaopt.inner.compiled import BACKENDS, CompiledUnroll
from metaopt.inner.stacked import advance_many, unroll_many
from metaopt.inner.unroll import InnerState, Trajectory, unroll
from metaopt.outer.base import Estimator, MetaGradient
from metaopt.rules import LearnedRule

__all__ = ["OPTIMIZEES", "TruncatedBackprop", "TruncatedBackpropConfig"]

OPTIMIZEES = ("loop", "stack")
"""How the meta-batch is unrolled: one optimizee after another, or all together."""


@dataclass
class TruncatedBackpropConfig:
    """Options of ``truncated_backprop``."""

    optimizees: str = "loop"
    """loop: one higher unroll per optimizee (bit for bit as before); stack: the meta-batch unrolled together, one
    rule call per step and same-shape optimizees evaluated as one stacked model, the start offsets' plain steps
    taken together too (faster; equal to rounding)."""
    compile: bool = False
    """Unroll each optimizee through a compiled functional step, one torch.compile per optimizee structure (with
    optimizees: loop; equal to rounding; pays when a run meets few structures many times)."""
    compile_backend: str = "inductor"
    """The torch.compile backend of compile: inductor (generated code), aot_eager or eager (traced, eager kernels)."""

    def __post_init__(self) -> None:
        if self.optimizees not in OPTIMIZEES:
            raise InvalidValue(
                TruncatedBackpropConfig, "optimizees", self.optimizees,
                f"must be one of {', '.join(OPTIMIZEES)}, got {self.optimizees!r}",
            )  # fmt: skip
        if self.compile_backend not in BACKENDS:
            raise InvalidValue(
                TruncatedBackpropConfig, "compile_backend", self.compile_backend,
                f"must be one of {', '.join(BACKENDS)}, got {self.compile_backend!r}",
            )  # fmt: skip
        if self.compile and self.optimizees != "loop":
            raise InvalidValue(
                TruncatedBackpropConfig, "compile", self.compile,
                f"compiles the loop's unroll: set optimizees: loop (got {self.optimizees!r}) or compile: false",
            )  # fmt: skip


class TruncatedBackprop(Estimator):
    """The exact gradient of the truncation's meta-loss through the unroll (options: how the optimizees run)."""

    Config = TruncatedBackpropConfig
    config: TruncatedBackpropConfig
    _compiled: CompiledUnroll | None = None
    """The compiled steps of ``compile: true`` (built for the rule of the first estimate)."""

    @override
    def advance(self, rule: LearnedRule, inners: Sequence[InnerState], steps: Sequence[int]) -> None:
        if self.config.optimizees == "stack" and rule.separable_by_model:
            advance_many(inners, rule, steps)
        else:
            super().advance(rule, inners, steps)

    @override
    def estimate(self, rule: LearnedRule, inners: Sequence[InnerState], *, meta_step: int) -> MetaGradient:
        if self.config.optimizees == "stack" and rule.separable_by_model:
            return self._stacked(rule, inners)
        setup = self.setup
        weights = list(rule.parameters())
        total: list[Tensor | None] = [None] * len(weights)
        meta_losses, final_losses = [], []
        run = unroll
        if self.config.compile:
            if self._compiled is None or self._compiled.rule is not rule:
                self._compiled = CompiledUnroll(rule, self.config.compile_backend)
            run = self._compiled.unroll
        for inner in inners:
            trajectory = run(inner, setup.truncation, first_order=not setup.second_order)
            meta_loss = setup.objective(trajectory) / len(inners)
            grads = torch.autograd.grad(meta_loss, weights, allow_unused=True)
            total = [g if t is None else t if g is None else t + g for t, g in zip(total, grads)]
            meta_losses.append(float(meta_loss.detach()) * len(inners))
            final_losses.append(float(trajectory.losses[-1].detach()))
        return _result(tuple(total), meta_losses, final_losses, trajectory)

    def _stacked(self, rule: LearnedRule, inners: Sequence[InnerState]) -> MetaGradient:
        """The estimate from one unroll of the whole meta-batch and one backward pass of its mean meta-loss."""
        setup = self.setup
        trajectories = unroll_many(inners, rule, setup.truncation, first_order=not setup.second_order)
        meta_losses = [setup.objective(trajectory) / len(inners) for trajectory in trajectories]
        grads = torch.autograd.grad(torch.stack(meta_losses).sum(), list(rule.parameters()), allow_unused=True)
        return _result(grads, [float(loss.detach()) * len(inners) for loss in meta_losses],
                       [float(t.losses[-1].detach()) for t in trajectories], trajectories[-1])  # fmt: skip


def _result(grads: tuple[Tensor | None, ...], meta_losses: list[float], final_losses: list[float],
            last: Trajectory) -> MetaGradient:  # fmt: skip
    """The meta-gradient with the mean meta-loss and final loss, and the last optimizee's updates as a histogram."""
    updates = last.iterates[1:] - last.iterates[:-1]
    return MetaGradient(
        grads,
        {"loss": sum(meta_losses) / len(meta_losses), "final_loss": sum(final_losses) / len(final_losses)},
        {"updates": updates.detach()},
    )
