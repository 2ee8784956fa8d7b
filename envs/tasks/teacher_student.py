"""Teacher-student regression, the setting of the DSS paper's Section 2 (Freeman & Bruna 2017, Prop. 2.2, Thm. 2.4).

Inputs x ~ N(0, I_d) are drawn from ``data_seed``; the targets are the outputs of a fixed random *teacher* network,
``linear`` (y = A x) or ``relu`` (y = a^T relu(W x), ``teacher_width`` hidden units), scaled so that their mean square
over the training sample is 1 (the zero predictor has loss 1 there, so levels read as a fraction of the output's
power), plus optional Gaussian label noise. The *student* is an MLP with ``depth`` hidden layers of ``width`` units
and the ``activation`` of choice; ``activation=identity`` makes it a deep linear network (Section 2.2), ``depth=1``
with ``relu`` the one-hidden-layer half-rectified network of Theorem 2.4. Mean squared error, full batch; the
evaluation set is a second, independent sample of the same distribution; with ``valid_points`` a third one, from its
own random streams, is the held-out split that an ``eval_loss`` meta-objective scores (the first two do not move).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from typing_extensions import override

from envs.seeding import generator
from envs.task import Batch, Recipe, Task, full_batches
from envs.task.nn import ACTIVATIONS, mlp
from envs.task.registry import register_task

__all__ = ["TeacherStudentOptions", "TeacherStudentTask"]

TEACHERS = ("linear", "relu")


@dataclass
class TeacherStudentOptions:
    """Options of ``teacher_student``."""

    input_dim: int = 8
    """Dimension d of the Gaussian inputs."""
    output_dim: int = 1
    """Outputs of the teacher and the student."""
    width: int = 16
    """Hidden units per layer of the student."""
    depth: int = 1
    """Hidden layers of the student (0: a single linear layer, a convex problem)."""
    activation: str = "relu"
    """Student non-linearity: relu, sigmoid, tanh, or identity (a deep linear network)."""
    bias: bool = True
    """Whether the student's layers have biases."""
    teacher: str = "relu"
    """``linear`` (y = A x) or ``relu`` (one hidden layer of ``teacher_width`` ReLU units, no biases)."""
    teacher_width: int = 4
    """Hidden units of a ``relu`` teacher."""
    noise: float = 0.0
    """Standard deviation of the Gaussian label noise, relative to the (unit) scale of the teacher's outputs."""
    num_points: int = 1000
    """Training examples."""
    eval_points: int = 1000
    """Evaluation examples, an independent sample."""
    valid_points: int = 0
    """Held-out examples for an eval_loss meta-objective, a third independent sample (0: no held-out split)."""
    data_seed: int = 0
    """Seed of the teacher's weights, the inputs and the noise."""

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher must be one of {', '.join(TEACHERS)}, got {self.teacher!r}")
        for key in ("input_dim", "output_dim", "width", "teacher_width", "num_points", "eval_points"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.valid_points < 0:
            raise ValueError(f"valid_points must be >= 0 (0: no held-out split), got {self.valid_points}")
        if self.depth < 0:
            raise ValueError(f"depth must be >= 0, got {self.depth}")
        if not self.noise >= 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")


@register_task
class TeacherStudentTask(Task):
    """``teacher_student``: an MLP student regresses a fixed random teacher on Gaussian inputs; mean squared error."""

    name = "teacher_student"
    Options = TeacherStudentOptions
    recipe = Recipe(optimizer="adam", lr=0.01, steps=2000)

    def _teacher_outputs(self, x: Tensor) -> Tensor:
        """The teacher's raw outputs ``(n, output_dim)`` for inputs ``x (n, d)``, in float64."""
        o = self.options
        g = generator(o.data_seed, self.name, "teacher")
        if o.teacher == "linear":
            a = torch.randn(o.output_dim, o.input_dim, generator=g, dtype=torch.float64)
            return x @ a.T
        w = torch.randn(o.teacher_width, o.input_dim, generator=g, dtype=torch.float64)
        a = torch.randn(o.output_dim, o.teacher_width, generator=g, dtype=torch.float64)
        return torch.relu(x @ w.T) @ a.T

    def _samples(self) -> tuple[Batch, Batch]:
        if not hasattr(self, "_data"):
            o = self.options
            g = generator(o.data_seed, self.name, "inputs")
            x = torch.randn(o.num_points + o.eval_points, o.input_dim, generator=g, dtype=torch.float64)
            y = self._teacher_outputs(x)
            scale = y[: o.num_points].pow(2).mean().sqrt().clamp_min(1e-12)  # unit mean square on the training set
            y = y / scale
            if o.noise > 0:
                y = y + o.noise * torch.randn(y.shape, generator=generator(o.data_seed, self.name, "noise"),
                                              dtype=torch.float64)  # fmt: skip
            x, y = x.to(self.device, self.dtype), y.to(self.device, self.dtype)
            n = o.num_points
            self._data = ((x[:n], y[:n]), (x[n:], y[n:]))
            self._scale = scale
        return self._data

    def held_out_data(self) -> Batch:
        """The held-out sample ``(x (valid_points, d), y)``: same teacher, scale and noise level, its own streams."""
        o = self.options
        if not hasattr(self, "_held_out"):
            self._samples()  # the training sample's scale
            g = generator(o.data_seed, self.name, "valid_inputs")
            x = torch.randn(o.valid_points, o.input_dim, generator=g, dtype=torch.float64)
            y = self._teacher_outputs(x) / self._scale
            if o.noise > 0:
                y = y + o.noise * torch.randn(y.shape, generator=generator(o.data_seed, self.name, "valid_noise"),
                                              dtype=torch.float64)  # fmt: skip
            self._held_out = (x.to(self.device, self.dtype), y.to(self.device, self.dtype))
        return self._held_out

    @override
    def build_model(self) -> nn.Module:
        o = self.options
        sizes = [o.input_dim] + [o.width] * o.depth + [o.output_dim]
        return mlp(sizes, o.activation, bias=o.bias)

    @override
    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return ((outputs - targets) ** 2).mean()

    def train_data(self) -> Batch:
        """The fixed training sample ``(x (n, d), y (n, output_dim))``."""
        return self._samples()[0]

    @override
    def batches(self, seed: int) -> Iterator[Batch]:
        return full_batches(self.train_data())

    @override
    def valid_batches(self, seed: int) -> Iterator[Batch]:
        if not self.options.valid_points:
            return super().valid_batches(seed)
        return full_batches(self.held_out_data())

    @override
    def eval_data(self) -> Batch:
        return self._samples()[1]
