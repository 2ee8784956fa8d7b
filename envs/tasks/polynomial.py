"""Polynomial regression tasks of the DSS paper (Freeman & Bruna 2017, §4.1 and its reference scripts).

Both fit y = p(x) on 10,000 points x ~ U[0, 1] with a 1-4-4-1 sigmoid MLP and the mean absolute (L1) loss, full batch.
``poly_quadratic``: p(x) = 0.5x^2 + 0.25x + 0.1, no biases, sigmoid output. ``poly_cubic``: p(x) = 8x^3 - 10x^2 + 3x,
with biases and a linear output. The evaluation set is a second, independent sample of the same size.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from typing_extensions import override

from envs.seeding import generator
from envs.task import Batch, Recipe, Task, full_batches
from envs.task.nn import mlp
from envs.task.registry import register_task

__all__ = ["PolyCubicTask", "PolyQuadraticTask", "PolynomialOptions"]


@dataclass
class PolynomialOptions:
    """Options of the polynomial regression tasks."""

    num_points: int = 10_000
    """Training points x ~ U[0, 1]."""
    eval_points: int = 10_000
    """Evaluation points, an independent sample."""
    data_seed: int = 0
    """Seed of both samples."""

    def __post_init__(self) -> None:
        if self.num_points < 1 or self.eval_points < 1:
            raise ValueError("num_points and eval_points must be positive")


class _PolynomialTask(Task):
    """Shared machinery: the samples, the L1 criterion and a full-batch stream."""

    Options = PolynomialOptions
    bias: ClassVar[bool]
    output_activation: ClassVar[str | None]

    @staticmethod
    @abstractmethod
    def target(x: Tensor) -> Tensor:
        """The polynomial p(x) the network regresses."""

    def _sample(self, n: int, stream: str) -> Batch:
        g = generator(self.options.data_seed, self.name, stream)
        x = torch.rand(n, 1, generator=g, dtype=torch.float64)
        return x.to(self.device, self.dtype), self.target(x).to(self.device, self.dtype)

    def build_model(self) -> nn.Module:
        return mlp([1, 4, 4, 1], "sigmoid", bias=self.bias, output_activation=self.output_activation)

    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs - targets).abs().mean()

    def train_data(self) -> Batch:
        """The fixed training sample."""
        if not hasattr(self, "_train"):
            self._train = self._sample(self.options.num_points, "train")
        return self._train

    def batches(self, seed: int) -> Iterator[Batch]:
        return full_batches(self.train_data())

    def eval_data(self) -> Batch:
        return self._sample(self.options.eval_points, "eval")


@register_task
class PolyQuadraticTask(_PolynomialTask):
    """``poly_quadratic``: y = 0.5x^2 + 0.25x + 0.1; 1-4-4-1 sigmoid MLP without biases, sigmoid output; L1 loss."""

    name = "poly_quadratic"
    recipe = Recipe(optimizer="adam", lr=0.05, steps=3000)
    bias = False
    output_activation = "sigmoid"

    @staticmethod
    @override
    def target(x: Tensor) -> Tensor:
        return 0.5 * x**2 + 0.25 * x + 0.1


@register_task
class PolyCubicTask(_PolynomialTask):
    """``poly_cubic``: y = 8x^3 - 10x^2 + 3x; 1-4-4-1 sigmoid MLP with biases, linear output; L1 loss."""

    name = "poly_cubic"
    recipe = Recipe(optimizer="adam", lr=0.05, steps=3000)
    bias = True
    output_activation = None

    @staticmethod
    @override
    def target(x: Tensor) -> Tensor:
        return 8 * x**3 - 10 * x**2 + 3 * x
