"""The nearest point of a level set: project theta onto {x : F(x) <= L} by sequential linearisation.

A point above the level (F(theta) > L) is moved to the closest point of the level set that can be certified, not
wherever an optimizer's descent happens to cross the level. The problem ``min ||x - theta||`` subject to
``F(x) <= L`` is solved by sequential quadratic programming on its one constraint: at the current x, with gradient
g = grad F(x), the closest point to theta on the linearised level ``F(x) + g . (y - x) = c`` is

    y = theta - ((F(x) + g . (theta - x) - c) / ||g||^2) g,

exact when F is linear; x moves towards y (a damped step, halved whenever it would raise F above where it was; where
the linearisation keeps misleading, a backtracking step along -g restores progress, as the feasibility-restoration
phase of SQP methods does) until F(x) <= c and x - theta is parallel to g (the optimality condition of the
projection). The target c is
``alpha * L`` (or L minus a fraction of the gap), so the point found lies strictly inside the level and its evaluation
loss certifies it. F is the task's evaluation loss, the loss DSS certifies against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from envs.tooling.config import check_range
from geodesics.space import ParamSpace

__all__ = ["Projection", "ProjectionConfig", "eval_value_and_grad", "project_to_level"]


@dataclass
class ProjectionConfig:
    """Settings of :func:`project_to_level`."""

    alpha: float = 0.95
    """The point is driven to F <= alpha * L (inside the level, as DSS trains its beads)."""
    max_steps: int = 200
    """Linearisation steps at most."""
    damping: float = 1.0
    """First step size towards the linearised projection (halved on a step that raises F)."""
    tolerance: float = 1e-3
    """Stop once F is within a tenth of the margin above alpha L and the part of x - theta orthogonal to grad F is
    below this fraction of ||x - theta||."""

    def __post_init__(self) -> None:
        check_range(self, "alpha", low=0, high=1, low_open=True)
        check_range(self, "max_steps", low=1, integer=True)
        check_range(self, "damping", low=0, high=1, low_open=True)
        check_range(self, "tolerance", low=0, low_open=True)


@dataclass
class Projection:
    """The result of :func:`project_to_level`."""

    point: Tensor
    """``(P,)``: the projected point (``theta`` itself when it was inside the level already)."""
    loss: float
    """Its evaluation loss."""
    reached: bool
    """Whether its loss is at most the level L."""
    steps: int
    """Linearisation steps taken."""
    distance: float
    """``||point - theta||``."""
    orthogonality: float
    """Part of ``point - theta`` orthogonal to the gradient at the point, relative to its length (0 at the exact
    projection of a smooth level set)."""


def eval_value_and_grad(space: ParamSpace, theta: Tensor) -> tuple[float, Tensor]:
    """The evaluation loss at ``theta`` and its gradient (the example-weighted mean over the evaluation chunks)."""
    total, grad, count = 0.0, torch.zeros_like(theta, dtype=torch.float64), 0
    for batch in space.task.eval_batches():
        weight = int(batch[1].shape[0])
        values, grads = space.batched_value_and_grad(theta.unsqueeze(0), batch)
        total += float(values[0]) * weight
        grad += grads[0].double() * weight
        count += weight
    return total / count, (grad / count).to(theta.dtype)


def project_to_level(
    space: ParamSpace, theta: Tensor, level: float, config: ProjectionConfig | None = None
) -> Projection:
    """The closest point to ``theta`` with evaluation loss at most ``level`` that sequential linearisation finds.

    Raises:
        ValueError: a level that is not a finite positive loss, or a vector of the wrong size.
    """
    config = config or ProjectionConfig()
    if not (math.isfinite(level) and level > 0):
        raise ValueError(f"the level must be a finite loss > 0, got {level}")
    theta = space.check(theta)
    value, grad = eval_value_and_grad(space, theta)
    if value <= level:
        return Projection(theta.clone(), value, True, 0, 0.0, 0.0)
    target = config.alpha * level
    x, step, damping = theta.clone(), 0, config.damping
    orthogonality = math.inf
    for step in range(1, config.max_steps + 1):  # noqa: B007 (the count is reported)
        g = grad.double()
        norm2 = float(g @ g)
        if norm2 == 0 or not math.isfinite(norm2):
            break
        offset = (theta - x).double()
        y = theta.double() - ((value + float(g @ offset) - target) / norm2) * g
        while True:
            candidate = (x.double() + damping * (y - x.double())).to(theta.dtype)
            new_value, new_grad = eval_value_and_grad(space, candidate)
            if math.isfinite(new_value) and new_value <= max(value, target):
                break
            damping /= 2
            if damping < 1 / 64:  # the linearisation misleads here: restore feasibility along -grad F instead
                candidate, new_value, new_grad = _restoration_step(space, x, value, g, target)
                damping = 1 / 32
                break
        x, value, grad = candidate, new_value, new_grad
        damping = min(config.damping, damping * 2)
        orthogonality = _orthogonality(x - theta, grad)
        if value <= target + 0.1 * (level - target) and orthogonality <= config.tolerance:
            break
    distance = float((x - theta).double().norm())
    return Projection(x, value, value <= level, step, distance, orthogonality)


def _restoration_step(
    space: ParamSpace, x: Tensor, value: float, g: Tensor, target: float
) -> tuple[Tensor, float, Tensor]:
    """A backtracking (Armijo) step along -grad F that lowers F, starting from the Newton step to the target."""
    norm2 = float(g @ g)
    step = max(value - target, 0.0) / norm2
    for _ in range(30):
        candidate = (x.double() - step * g).to(x.dtype)
        new_value, new_grad = eval_value_and_grad(space, candidate)
        if math.isfinite(new_value) and new_value <= value - 1e-4 * step * norm2:
            return candidate, new_value, new_grad
        step /= 2
    return x, value, g.to(x.dtype)


def _orthogonality(direction: Tensor, grad: Tensor) -> float:
    d, g = direction.double(), grad.double()
    length = float(d.norm())
    if length == 0 or float(g.norm()) == 0:
        return 0.0
    along = (d @ g) / (g @ g) * g
    return float((d - along).norm()) / length
