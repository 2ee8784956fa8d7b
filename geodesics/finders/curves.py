"""Curves trained by sampling t: a Bezier curve and a polygonal chain (Garipov et al. 2018).

After "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs" and its code (dnn-mode-connectivity).

A curve phi(t) = sum_k w_k(t) c_k, t in [0, 1], has control points c_0 = A and c_{n+1} = B fixed and n = ``bends``
trainable ones in between. ``bezier``: the Bernstein weights of degree n + 1 (n = 1 is the quadratic Bezier
(1 - t)^2 A + 2t(1 - t) c + t^2 B of the paper). ``polychain``: the chain A -> c_1 -> ... -> c_n -> B with the
knots at t = k / (n + 1) (n = 1 is the paper's one-bend chain). As in the paper, the control points start on the
chord and are trained on the loss at points of the curve: each step draws ``samples`` values of t, stratified over
[0, 1], evaluates the loss and its gradient at all of them in one batched call and descends the mean, whose
gradient with respect to c_k is mean_j w_k(t_j) grad F(phi(t_j)).

The path is a polyline so that it is certified by the same segment checks as every other finder: the chain is its
own polyline; the Bezier curve is represented by ``points`` vertices at evenly spaced t (endpoints included, exactly
A and B), on which its length, beads and certified maximum are measured. Like DSS, the run first checks the chord
and returns it when it passes. Then a round is ``max_steps`` training steps; every ``check_every`` steps the polyline
vertices are evaluated, and when all are at or below alpha * L0 the polyline is certified, as it is at the end of
every round. Budgets follow DSS: rounds (``max_rounds``), vertices (``max_beads``), wall time and loss evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor

from envs.seeding import derive_seed, generator
from geodesics.curve import SegmentMax, segment_maxima
from geodesics.finders.base import DSSConfig, Pair
from geodesics.finders.common import Budget, StackOptimizer, bead_jitter, finish_string, pair_by_pair, round_record
from geodesics.finders.settings import TrainedCurveConfig
from geodesics.path import BeadString, RoundRecord
from geodesics.space import ParamSpace

__all__ = ["bezier_weights", "connect_bezier", "connect_polychain", "curve_points", "polychain_weights"]

Weights = Callable[[Tensor, int], Tensor]
"""``(ts (S,), bends) -> (S, bends + 2)`` weights of the control points [A, c_1, ..., c_n, B] at each t."""


def bezier_weights(ts: Tensor, bends: int) -> Tensor:
    """Bernstein weights ``(S, bends + 2)`` of the Bezier curve of degree ``bends + 1`` at ``ts (S,)``."""
    degree = bends + 1
    k = torch.arange(degree + 1, dtype=ts.dtype, device=ts.device)
    binomial = torch.tensor([math.comb(degree, int(i)) for i in k], dtype=ts.dtype, device=ts.device)
    t = ts.unsqueeze(1)
    return binomial * t**k * (1 - t) ** (degree - k)


def polychain_weights(ts: Tensor, bends: int) -> Tensor:
    """Hat-function weights ``(S, bends + 2)`` of the polygonal chain with knots at ``k / (bends + 1)``."""
    knots = torch.linspace(0.0, 1.0, bends + 2, dtype=ts.dtype, device=ts.device)
    return (1 - (ts.unsqueeze(1) - knots).abs() * (bends + 1)).clamp(min=0.0)


def curve_points(weights: Tensor, a: Tensor, b: Tensor, controls: Tensor) -> Tensor:
    """Points ``(S, P)`` of the curve with control points ``[a, *controls, b]`` for ``weights (S, n + 2)``."""
    w = weights.to(a.dtype)
    return w[:, :1] * a + w[:, -1:] * b + w[:, 1:-1] @ controls


def connect_bezier(
    space: ParamSpace,
    pairs: Sequence[Pair],
    thresholds: Sequence[float],
    endpoint_losses: Tensor,
    keys: Sequence[int],
    config: DSSConfig,
) -> list[BeadString]:
    """A trained Bezier curve for every pair (a ``PathFinder``, registered as ``bezier``)."""
    return pair_by_pair(space, pairs, thresholds, endpoint_losses, keys, config, partial(_connect_pair, kind="bezier"))


def connect_polychain(
    space: ParamSpace,
    pairs: Sequence[Pair],
    thresholds: Sequence[float],
    endpoint_losses: Tensor,
    keys: Sequence[int],
    config: DSSConfig,
) -> list[BeadString]:
    """A trained polygonal chain for every pair (a ``PathFinder``, registered as ``polychain``)."""
    return pair_by_pair(
        space, pairs, thresholds, endpoint_losses, keys, config, partial(_connect_pair, kind="polychain")
    )


class _Curve:
    """One curve under training: its control points, optimizer, t stream and batch stream."""

    def __init__(self, space: ParamSpace, a: Tensor, b: Tensor, key: int, config: DSSConfig, kind: str):
        self.space, self.a, self.b, self.config, self.kind = space, a, b, config, kind
        settings = config.options(TrainedCurveConfig)
        self.bends, self.samples, self.points = settings.bends, settings.samples, settings.points
        self.weights: Weights = bezier_weights if kind == "bezier" else polychain_weights
        knots = torch.linspace(0.0, 1.0, self.bends + 2, dtype=torch.float64, device=a.device)[1:-1]
        self.controls = torch.lerp(a.unsqueeze(0), b.unsqueeze(0), knots.to(a.dtype).unsqueeze(1))
        if config.bead_noise > 0:  # the jitter of a new DSS bead: breaks exact symmetries of the chord
            scale = config.bead_noise * float((b - a).norm()) / max(1.0, a.numel()) ** 0.5
            noise = torch.randn(self.controls.shape, generator=bead_jitter(config, key), dtype=torch.float64)
            self.controls = self.controls + scale * noise.to(a.device, a.dtype)
        self.optimizer = StackOptimizer(config, space, self.controls, settings.lr)
        self.ts = generator(config.seed, "curve-t", key)
        self.batches = space.task.batches(derive_seed(config.seed, "curve-batches", key))
        grid = torch.linspace(0.0, 1.0, self.points, dtype=torch.float64, device=a.device)
        self.grid_weights = bezier_weights(grid, self.bends) if kind == "bezier" else None

    @property
    def num_vertices(self) -> int:
        """Vertices of the polyline, endpoints included."""
        return self.points if self.kind == "bezier" else self.bends + 2

    def vertices(self) -> Tensor:
        """The polyline ``(K, P)``: the chain itself, or the Bezier curve at evenly spaced t (ends exactly A and B)."""
        if self.grid_weights is None:
            return torch.cat([self.a.unsqueeze(0), self.controls, self.b.unsqueeze(0)])
        points = curve_points(self.grid_weights, self.a, self.b, self.controls)
        points[0], points[-1] = self.a, self.b
        return points

    def step(self) -> None:
        """One training step on the mean loss at ``samples`` stratified values of t."""
        u = torch.rand(self.samples, generator=self.ts, dtype=torch.float64)
        ts = ((torch.arange(self.samples, dtype=torch.float64) + u) / self.samples).to(self.a.device)
        weights = self.weights(ts, self.bends).to(self.a.dtype)
        _, grads = self.space.batched_value_and_grad(curve_points(weights, self.a, self.b, self.controls),
                                                     next(self.batches))  # fmt: skip
        self.controls = self.optimizer.step(self.controls, weights[:, 1:-1].T @ grads / self.samples)


def _connect_pair(
    space: ParamSpace, a: Tensor, b: Tensor, threshold: float, endpoint_losses: Tensor, key: int, config: DSSConfig,
    kind: str,
) -> BeadString:  # fmt: skip
    budget = Budget.of(config, space)
    path, losses = [a, b], endpoint_losses.tolist()
    checks = segment_maxima(space, a.unsqueeze(0), b.unsqueeze(0), config.curve)
    initial = checks[0].upper
    history = [round_record(0, path, 0, checks, threshold, 0, budget, config)]
    curve = _Curve(space, a, b, key, config, kind)
    reason = ""
    if checks[0].upper <= threshold:  # the chord passes: the untrained curve is the chord itself
        pass
    elif curve.num_vertices > config.max_beads:
        reason = f"beads: the curve's {curve.num_vertices}-vertex polyline would exceed max_beads={config.max_beads}"
    elif config.max_rounds == 0:
        reason = "rounds: max_rounds=0 rounds of training used and 1 segments are still above L0"
    elif budget.expired:
        reason = budget.exhausted("after 0 rounds")
    else:
        path, losses, checks, reason = _train(curve, endpoint_losses, threshold, budget, history)
    return finish_string(space, path, losses, checks, threshold, reason=reason, method=kind, history=history,
                         config=config, initial_segment_max=initial)  # fmt: skip


def _train(
    curve: _Curve, endpoint_losses: Tensor, threshold: float, budget: Budget, history: list[RoundRecord]
) -> tuple[list[Tensor], list[float], list[SegmentMax], str]:
    """Train until the polyline is certified or a budget runs out; ``(path, losses, checks, reason)``."""
    space, config = curve.space, curve.config
    target = config.alpha * threshold
    path: list[Tensor] = []
    losses: list[float] = []
    checks: list[SegmentMax] = []
    failing = 0
    for round_ in range(1, config.max_rounds + 1):
        checks, vertex_losses, steps, stale, tried = [], None, 0, True, False
        for step in range(1, config.max_steps + 1):
            if budget.expired:
                break
            curve.step()
            steps, stale = step, True
            if step % config.check_every == 0:
                vertex_losses = space.batched_eval_loss(curve.vertices()[1:-1]).to(torch.float64)
                if not tried and bool((vertex_losses <= target).all()):  # certified once early, then at the end
                    checks, stale, tried = _certify(curve), False, True
                    if all(c.upper <= threshold for c in checks):
                        break
        if stale or not checks:
            checks = _certify(curve)
        path = list(curve.vertices().unbind(0))
        if vertex_losses is None or steps % config.check_every:
            vertex_losses = space.batched_eval_loss(torch.stack(path[1:-1])).to(torch.float64)
        losses = [float(endpoint_losses[0]), *vertex_losses.tolist(), float(endpoint_losses[1])]
        history.append(round_record(round_, path, 0, checks, threshold, steps, budget, config))
        failing = sum(c.upper > threshold for c in checks)
        if not failing:
            return path, losses, checks, ""
        reason = budget.exhausted(f"after {round_} rounds")
        if reason:
            return path, losses, checks, reason
    reason = f"rounds: max_rounds={config.max_rounds} rounds of training used and {failing} segments are still above L0"
    return path, losses, checks, reason


def _certify(curve: _Curve) -> list[SegmentMax]:
    vertices = curve.vertices()
    return segment_maxima(curve.space, vertices[:-1], vertices[1:], curve.config.curve)
