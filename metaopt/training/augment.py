"""Task augmentation for family meta-training: gradients rescaled by a constant, with the loss left as it is.

Metz et al. 2022 (VeLO) and Celo (Moudgil et al. 2025) meta-train on tasks whose gradients are multiplied by a random
factor, so a rule cannot tie its step to the gradient's absolute size. Here the factor acts in the backward pass
only (:class:`GradScaled` wraps an optimizee's model: its output is passed forward unchanged and its gradient is
multiplied by c on the way back), so every parameter's gradient is c times the true one while the training and
held-out losses, and so the meta-objective, stay those of the plain task. Rules whose updates are scale-free (the
``tiny`` rule) are unaffected by construction; the others have to learn to be.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metaopt.inner import InnerState
from metaopt.shells import LearnedOptimizer

__all__ = ["GradScaled", "rescale_gradients", "scale_gradient"]


class _ScaleGradient(torch.autograd.Function):
    """Identity forward, gradient times ``scale`` backward (vmap-able: torch.func transforms accept it)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(inputs: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        return inputs.view_as(inputs)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, float], output: Tensor) -> None:
        ctx.scale = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


def scale_gradient(inputs: Tensor, scale: float) -> Tensor:
    """``inputs`` unchanged, whose gradient is multiplied by ``scale`` in the backward pass."""
    return _ScaleGradient.apply(inputs, scale)


class GradScaled(nn.Module):
    """``model`` whose parameters receive ``scale`` times their gradient (outputs unchanged).

    Args:
        model: the optimizee's model (its parameters are this module's, under ``model.``).
        scale: the gradient factor c > 0.
    """

    def __init__(self, model: nn.Module, scale: float):
        super().__init__()
        self.model = model
        self.scale = float(scale)

    def extra_repr(self) -> str:
        """The factor, so that models wrapped with different factors print (and stack) apart."""
        return f"scale={self.scale!r}"

    def forward(self, *args: Any) -> Any:
        """The wrapped model's output (a tensor, or a tuple whose tensors are), its gradient to be scaled."""
        out = self.model(*args)
        if isinstance(out, Tensor):
            return scale_gradient(out, self.scale)
        return type(out)(scale_gradient(o, self.scale) if isinstance(o, Tensor) else o for o in out)


def rescale_gradients(inner: InnerState, scale: float) -> None:
    """Make the fresh optimizee ``inner`` see ``scale`` times its gradients (its model wrapped, a new optimizer).

    Raises:
        ValueError: ``inner`` has already taken steps (its optimizer state belongs to the unwrapped model).
    """
    if inner.step:
        raise ValueError("gradients can only be rescaled before an optimizee's first step")
    inner.model = GradScaled(inner.model, scale)
    inner.optimizer = LearnedOptimizer(inner.model.parameters(), rule=inner.optimizer.rule)
