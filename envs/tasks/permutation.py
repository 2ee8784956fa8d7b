"""The disconnection example of the DSS paper (Appendix E): permute three points of the plane with a 2-3-2 ReLU net.

The inputs are three points x1, x2, x3 in R^2 and the targets map x1 -> x2, x2 -> x3, x3 -> x1. The network is
2-3-2 with one ReLU layer and no biases (12 free parameters, as in the paper). Swapping two hidden units of a trained
model gives an equivalent model that, by the paper's argument, lies in a different component of the level set.
With the default ``points="triangle"`` (unit vectors at 90, 210 and 330 degrees) the map is exactly representable:
hidden unit i fires for x_i only, so a global minimum has loss 0.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from typing_extensions import override

from envs.seeding import generator
from envs.task import Batch, Recipe, Task, full_batches
from envs.task.registry import register_task

__all__ = ["PermutationOptions", "PermutationTask", "swap_hidden_units"]


@dataclass
class PermutationOptions:
    """Options of ``permutation``."""

    points: str = "triangle"
    """``triangle`` (unit vectors at 90/210/330 degrees) or ``random`` (Gaussian points from ``data_seed``)."""
    data_seed: int = 0
    """Seed of the random points."""

    def __post_init__(self) -> None:
        if self.points not in ("triangle", "random"):
            raise ValueError(f"points must be 'triangle' or 'random', got {self.points!r}")


@register_task
class PermutationTask(Task):
    """``permutation``: 2-3-2 ReLU network without biases mapping x1 -> x2 -> x3 -> x1; mean squared error."""

    name = "permutation"
    Options = PermutationOptions
    recipe = Recipe(optimizer="adam", lr=0.05, steps=1000)

    def _points(self) -> Tensor:
        if self.options.points == "triangle":
            angles = torch.tensor([90.0, 210.0, 330.0], dtype=torch.float64) * math.pi / 180
            return torch.stack([angles.cos(), angles.sin()], dim=1)
        return torch.randn(3, 2, generator=generator(self.options.data_seed, "permutation"), dtype=torch.float64)

    def data(self) -> Batch:
        """``(x (3, 2), targets (3, 2))`` with ``targets[i] = x[(i + 1) % 3]``."""
        x = self._points()
        return x.to(self.device, self.dtype), x.roll(-1, dims=0).to(self.device, self.dtype)

    @override
    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))

    @override
    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return ((outputs - targets) ** 2).sum(dim=-1).mean()

    @override
    def batches(self, seed: int) -> Iterator[Batch]:
        return full_batches(self.data())

    @override
    def eval_data(self) -> Batch:
        return self.data()


@torch.no_grad()
def swap_hidden_units(model: nn.Module, i: int = 0, j: int = 1) -> nn.Module:
    """Swap hidden units ``i`` and ``j`` of a ``permutation`` model in place (rows of W1, columns of W2).

    The network computes the same function afterwards; its weights are a different point of parameter space.
    """
    layers = typing.cast(nn.Sequential, model)
    first, second = typing.cast(nn.Linear, layers[0]).weight, typing.cast(nn.Linear, layers[2]).weight
    first[[i, j]] = first[[j, i]].clone()
    second[:, [i, j]] = second[:, [j, i]].clone()
    return model
