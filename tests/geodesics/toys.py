"""Analytic 2-D tasks with known level sets, for checking the DSS engine against geometry we can compute by hand."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from envs.task import Batch, Recipe, Task, full_batches


@dataclass
class ToyOptions:
    start: tuple[float, ...] = (0.0, 0.0)


class PointModel(nn.Module):
    """A model that is just a point theta; ``forward`` ignores its input and returns theta."""

    def __init__(self, start: tuple[float, ...]):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(start, dtype=torch.float32))

    def forward(self, inputs: Tensor) -> Tensor:
        return self.theta


class AnalyticTask(Task):
    """Loss = ``fn(theta)``; training batches and the evaluation set are a dummy batch."""

    name = "analytic"
    Options = ToyOptions
    recipe = Recipe("adam", 0.02, 500)

    def __init__(self, fn: Callable[[Tensor], Tensor], start: tuple[float, ...] = (0.0, 0.0), **kwargs: object):
        super().__init__(ToyOptions(start), **kwargs)  # type: ignore[arg-type]
        self.fn = fn

    def build_model(self) -> nn.Module:
        return PointModel(self.options.start)

    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.fn(outputs)

    def _batch(self) -> Batch:
        return torch.zeros(1, device=self.device), torch.zeros(1, device=self.device)

    def batches(self, seed: int) -> Iterator[Batch]:
        return full_batches(self._batch())

    def eval_data(self) -> Batch:
        return self._batch()


def annulus(theta: Tensor) -> Tensor:
    """(||theta|| - 1)^2: its level set {F <= L0} is the ring 1 - sqrt(L0) <= r <= 1 + sqrt(L0)."""
    return (theta.norm() - 1) ** 2


def two_wells(theta: Tensor) -> Tensor:
    """Wells at (+-1, 0) with loss 0, separated by the wall x = 0 where the loss is at least 1 for every y."""
    x, y = theta[0], theta[1]
    return (x.abs() - 1) ** 2 + 0.1 * y**2


def bowl(theta: Tensor) -> Tensor:
    """A convex quadratic: every level set is an ellipse."""
    return theta[0] ** 2 + 4 * theta[1] ** 2


HALF_CIRCLE = math.pi / 2
