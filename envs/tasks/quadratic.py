"""The 10-d quadratic of "Learning to learn by gradient descent by gradient descent" (Andrychowicz et al. 2016, §3.1).

f(theta) = ||W theta - y||^2 with W (dim x dim) and y (dim) drawn i.i.d. N(0, 1). It is a problem *family*: every run
seed draws its own W and y (``Task.instance``), which is how the L2L paper meta-trains and tests on unseen functions.
In batch form the "inputs" are W and the "targets" y, so the same ``criterion(model(inputs), targets)`` path serves
DSS, ``higher`` and the baselines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from typing_extensions import override

from envs.seeding import generator
from envs.task import Batch, Recipe, Task, full_batches
from envs.task.registry import register_task

__all__ = ["QuadraticModel", "QuadraticOptions", "QuadraticTask"]


@dataclass
class QuadraticOptions:
    """Options of the ``quadratic`` task."""

    dim: int = 10
    """Dimension of theta; W is dim x dim."""
    data_seed: int = 0
    """Seed of the problem instance (W, y). Consumers that sample a family replace it by the run seed."""
    init_std: float = 0.01
    """Standard deviation of the Gaussian initial theta (0.01 in the L2L reference code)."""

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be positive, got {self.dim}")


class QuadraticModel(nn.Module):
    """Holds theta; ``forward(W) = W @ theta``."""

    def __init__(self, dim: int, init_std: float):
        super().__init__()
        self.theta = nn.Parameter(torch.randn(dim) * init_std)

    def forward(self, w: Tensor) -> Tensor:
        """``w: (dim, dim) -> (dim,)``."""
        return w @ self.theta


@register_task
class QuadraticTask(Task):
    """``quadratic``: f(theta) = ||W theta - y||^2, W and y ~ N(0, 1) drawn from ``data_seed``; full batch."""

    name = "quadratic"
    Options = QuadraticOptions
    recipe = Recipe(optimizer="adam", lr=0.1, steps=100)

    @override
    def build_model(self) -> nn.Module:
        return QuadraticModel(self.options.dim, self.options.init_std)

    @override
    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return ((outputs - targets) ** 2).sum(dim=-1).mean()  # mean over a stack of instances, if any

    @property
    def problem(self) -> Batch:
        """``(W, y)`` of this instance."""
        if not hasattr(self, "_problem"):
            g = generator(self.options.data_seed, "quadratic")
            dim = self.options.dim
            w = torch.randn(dim, dim, generator=g, dtype=torch.float64)
            y = torch.randn(dim, generator=g, dtype=torch.float64)
            self._problem = (w.to(self.device, self.dtype), y.to(self.device, self.dtype))
        return self._problem

    @override
    def batches(self, seed: int) -> Iterator[Batch]:
        return full_batches(self.problem)

    @override
    def eval_data(self) -> Batch:
        w, y = self.problem
        return w.unsqueeze(0), y.unsqueeze(0)

    @override
    def valid_batches(self, seed: int) -> Iterator[Batch]:
        """The problem itself: a deterministic objective has no data to hold out, its held-out loss is its loss."""
        return full_batches(self.problem)

    @override
    def instance(self, seed: int) -> QuadraticTask:
        return QuadraticTask(dataclasses.replace(self.options, data_seed=seed), device=self.device, dtype=self.dtype)

    def minimum(self) -> float:
        """The exact minimum of f over theta (least squares), for tests and reports."""
        w, y = (t.double().cpu() for t in self.problem)
        solution = torch.linalg.lstsq(w, y.unsqueeze(-1)).solution.squeeze(-1)
        return float(((w @ solution - y) ** 2).sum())
