"""Task augmentation for family meta-training: gradients rescaled by a constant, weights reparameterized.

Metz et al. 2022 (VeLO) and Celo (Moudgil et al. 2025) meta-train on tasks whose gradients are multiplied by a random
factor, so a rule cannot tie its step to the gradient's absolute size. Here the factor acts in the backward pass
only (:class:`GradScaled` wraps an optimizee's model: its output is passed forward unchanged and its gradient is
multiplied by c on the way back), so every parameter's gradient is c times the true one while the training and
held-out losses, and so the meta-objective, stay those of the plain task. Rules whose updates are scale-free (the
``tiny`` rule) are unaffected by construction; the others have to learn to be.

Weight reparameterization (VeLO's augmentation) changes the function less trivially: a linear or convolutional
layer stores its weight times c and divides its input by c (:class:`InputScaled`), so the network computes the same
function, the stored weight's gradient is the true one over c, and a step of a given size in the stored weight
moves the function 1/c as far. A rule with a fixed step size per tensor (the ``tiny`` rule: its inputs are the
same for any c) meets layers that learn at c different speeds and has to cope from what it sees on the way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metaopt.inner import InnerState
from metaopt.shells import LearnedOptimizer

__all__ = [
    "REPARAMETERIZED",
    "GradScaled",
    "InputScaled",
    "reparameterizable_layers",
    "reparameterize_weights",
    "rescale_gradients",
    "scale_gradient",
]


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


REPARAMETERIZED = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""Layers whose output is linear in the input and in the weight: scaling one by c and the other by 1/c cancels."""


class InputScaled(nn.Module):
    """``layer`` with its stored weight multiplied by ``scale`` and its input divided by it: the same function.

    Args:
        layer: a linear or convolutional layer (one of :data:`REPARAMETERIZED`); its weight is scaled in place.
        scale: the factor c > 0.
    """

    def __init__(self, layer: nn.Linear | nn.Conv1d | nn.Conv2d, scale: float):
        super().__init__()
        self.layer = layer
        self.scale = float(scale)
        with torch.no_grad():
            layer.weight.mul_(self.scale)

    def forward(self, inputs: Tensor) -> Tensor:
        """The wrapped layer's output for ``inputs / scale``."""
        return self.layer(inputs / self.scale)

    def extra_repr(self) -> str:
        """The factor, so that layers reparameterized by different factors print (and stack) apart."""
        return f"scale={self.scale!r}"


def reparameterizable_layers(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear | nn.Conv1d | nn.Conv2d]]:
    """``(parent, name, layer)`` of each linear or convolutional layer below ``model``, in its parameters' order."""
    found: list[tuple[nn.Module, str, nn.Linear | nn.Conv1d | nn.Conv2d]] = []
    for path, module in model.named_modules():
        if path and isinstance(module, REPARAMETERIZED):
            parent, _, name = path.rpartition(".")
            found.append((model.get_submodule(parent), name, module))
    return found


def reparameterize_weights(inner: InnerState, scales: Sequence[float]) -> None:
    """Wrap the i-th layer of :func:`reparameterizable_layers` of the fresh optimizee ``inner`` by ``scales[i]``.

    Each becomes an :class:`InputScaled` (a factor of 1 leaves its layer as it is), and ``inner`` gets a new optimizer
    over the same parameters, in the same order.

    Raises:
        ValueError: ``inner`` has already taken steps, or ``scales`` does not give one factor per layer.
    """
    if inner.step:
        raise ValueError("weights can only be reparameterized before an optimizee's first step")
    found = reparameterizable_layers(inner.model)
    if len(scales) != len(found):
        raise ValueError(f"{len(found)} layers to reparameterize, {len(scales)} factors")
    for (parent, name, child), scale in zip(found, scales):
        if scale != 1.0:
            setattr(parent, name, InputScaled(child, scale))
    inner.optimizer = LearnedOptimizer(inner.model.parameters(), rule=inner.optimizer.rule)
