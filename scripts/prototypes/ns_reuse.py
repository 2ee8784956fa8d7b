"""Prototype, not in the package: ``family-v3``'s Newton-Schulz factor computed every ``every`` steps, reused between.

Each matrix the rule orthogonalizes (or each group of ``ns_block`` rows), scaled to unit Frobenius norm, ``X``, goes to
``Q X`` with ``Q = p(A_4) ... p(A_0)``, the product of the quintic's polynomials in the successive Gram matrices: in
exact arithmetic ``Q X`` is the five iterations' result (the Gram form of ``envs.training.muon.orthogonalize``).
``Q`` is computed afresh every ``every`` steps and reused in between, so the steps between cost one ``m x m`` by
``m x n`` product per matrix instead of the iterations. ``every=1`` computes it at every step (the control: the
shipped rule's result to float32 rounding). A reused ``Q`` is a left preconditioner from a few steps back: the
direction is no longer orthogonal, only whitened by an older Gram matrix.

Used by ``metaopt compare`` through ``imports`` (the optimizer ``learned_ns_reuse``; options ``checkpoint``,
``every`` and the ``LearnedOptimizer`` ones):

    PYTHONPATH=scripts/prototypes metaopt compare scripts/prototypes/ns_reuse_wide.yaml out=runs/ns-reuse-wide

It swaps the rule's orthogonalization for its own during each ``step()`` (the in-place and the functional drop-in
steps both look it up at call time); the compiled step and meta-training are not covered.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import metaopt.rules.tiny as tiny_module
import metaopt.rules.tiny_inplace as inplace_module
from envs.training.muon import newton_schulz_factor
from envs.training.optim import register_optimizer
from metaopt.shells import LearnedOptimizer


class Reuse:
    """A stand-in for ``orthogonalize`` keeping each call's ``Q`` (the i-th call of a step is the i-th matrix).

    Args:
        every: steps between fresh factors (1: fresh at every step).
    """

    def __init__(self, every: int) -> None:
        self.every, self.calls, self.refreshes = every, 0, 0
        self.cache: dict[tuple[int, int], list[Any]] = {}

    def start_step(self) -> None:
        """A new step: the next call is the step's first matrix."""
        self.calls = 0

    def __call__(self, matrix: Tensor, steps: int = 5, eps: float = 1e-7, block: int = 0, dtype: Any = None,
                 method: str = "auto") -> Tensor:  # fmt: skip
        """``matrix`` orthogonalized as ``orthogonalize`` would, with a factor at most ``every - 1`` steps old."""
        index, self.calls = self.calls, self.calls + 1
        wide = matrix.shape[-2] <= matrix.shape[-1]
        x = matrix if wide else matrix.mT
        rows, cols = x.shape[-2:]
        whole = rows // block * block if 0 < block < rows else rows
        groups = [x[:whole].reshape(-1, block, cols)] if 0 < block < rows else [x]
        if whole < rows:
            groups.append(x[whole:])
        out = []
        for g, group in enumerate(groups):
            scaled = group / group.norm(dim=(-2, -1), keepdim=True).clamp_min(eps)
            entry = self.cache.get((index, g))
            if entry is None or entry[1] >= self.every or entry[0].shape[:-1] != scaled.shape[:-1]:
                entry = self.cache[(index, g)] = [newton_schulz_factor(scaled, steps), 0]
                self.refreshes += 1
            entry[1] += 1
            out.append((entry[0] @ scaled).reshape(-1, cols))
        result = out[0] if len(out) == 1 else torch.cat(out)
        return result if wide else result.mT


class LearnedNSReuse(LearnedOptimizer):
    """``LearnedOptimizer`` whose rule reuses each matrix's Newton-Schulz factor for ``every`` steps."""

    def __init__(self, params: Any, checkpoint: str | None = None, *, every: int = 1, **kwargs: Any) -> None:
        super().__init__(params, checkpoint, **kwargs)
        self.reuse = Reuse(every)

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """``LearnedOptimizer.step`` with the rule's orthogonalization swapped for :class:`Reuse` meanwhile."""
        saved = inplace_module.orthogonalize, tiny_module.orthogonalize
        self.reuse.start_step()
        inplace_module.orthogonalize = tiny_module.orthogonalize = self.reuse  # type: ignore[assignment]
        try:
            return super().step(closure)
        finally:
            inplace_module.orthogonalize, tiny_module.orthogonalize = saved


register_optimizer("learned_ns_reuse", "ns_reuse:LearnedNSReuse", tunable_lr=False, checkpoint=None)
