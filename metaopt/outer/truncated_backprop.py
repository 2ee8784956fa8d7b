"""Truncated backpropagation through the ``higher`` unroll (Andrychowicz et al. 2016, section 3).

Registered as ``truncated_backprop``. Each optimizee is unrolled T steps with the differentiable twin of the learned
optimizer (:func:`~metaopt.inner.unroll.unroll`); its meta-loss, divided by the batch size, is backpropagated to the
rule's weights, and the gradients of the batch are summed in order (as successive ``backward()`` calls would accumulate
them). With ``second_order`` false the optimizee's gradients enter the rule detached (the paper's simplification);
parameters and rule state are carried, detached, into the next truncation, so the estimate is biased by the truncation,
as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from typing_extensions import override

from metaopt.inner.unroll import InnerState, unroll
from metaopt.outer.base import Estimator, MetaGradient
from metaopt.rules import LearnedRule

__all__ = ["TruncatedBackprop"]


class TruncatedBackprop(Estimator):
    """The exact gradient of the truncation's meta-loss through the unroll (no options besides ``second_order``)."""

    @override
    def estimate(self, rule: LearnedRule, inners: Sequence[InnerState], *, meta_step: int) -> MetaGradient:
        setup = self.setup
        weights = list(rule.parameters())
        total: list[Tensor | None] = [None] * len(weights)
        meta_losses, final_losses = [], []
        for inner in inners:
            trajectory = unroll(inner, setup.truncation, first_order=not setup.second_order)
            meta_loss = setup.objective(trajectory) / len(inners)
            grads = torch.autograd.grad(meta_loss, weights, allow_unused=True)
            total = [g if t is None else t if g is None else t + g for t, g in zip(total, grads)]
            meta_losses.append(float(meta_loss.detach()) * len(inners))
            final_losses.append(float(trajectory.losses[-1].detach()))
        updates = trajectory.iterates[1:] - trajectory.iterates[:-1]
        return MetaGradient(
            tuple(total),
            {"loss": sum(meta_losses) / len(meta_losses), "final_loss": sum(final_losses) / len(final_losses)},
            {"updates": updates.detach()},
        )
