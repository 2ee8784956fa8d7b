"""Predictability of geodesic targets: how well a fixed linear rule on past gradients predicts a window's first step.

The proposal argues that the smoother the geodesic, the easier it is to predict from past and present information
. This module measures it. For each connected window of a geodesic-target dataset, the base
run's minibatch gradients g_0 .. g_t are recomputed at the recorded iterates theta_0 .. theta_t on the base run's
batches (exactly the gradients the base optimizer saw), and per-coordinate features at step t are formed from them
alone (:data:`FEATURES`: the gradient, bias-corrected moving averages, the heavy-ball buffer, Adam's direction, ...).
The quantity to predict is a step ``Delta`` of shape ``(P,)``, of one of three kinds (:data:`STEP_KINDS`):

* ``geodesic``: the first target step ``targets[1] - targets[0]`` of the window;
* ``chord``: the first step of the straight path, ``(theta_{t+T} - theta_t) / T``;
* ``teacher``: the base optimizer's own step ``theta_{t+1} - theta_t`` (the sanity check: with the base
  optimizer's update direction among the features it is a fixed multiple of a feature, and so predicted exactly).

The predictor is one coefficient vector ``c`` of ``k`` numbers, shared by every coordinate and every window,
``Delta ~ F c`` with ``F: (P, k)``, fitted by least squares in which each window weighs the same (its rows divided by
``||Delta||``, so the fit minimises the sum over windows of the unexplained fraction, the metric). It is
cross-fitted over base seeds: the seeds are split in two halves, the coefficients fitted on one half's windows
predict the other half's and the other way round, so every window is scored by a fit that never saw its base run.
Per window: the explained fraction ``R^2 = 1 - ||Delta - F c||^2 / ||Delta||^2`` (0 for the zero predictor, 1 for a
perfect one, negative when worse than predicting nothing) and the cosine of ``F c`` with ``Delta``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from envs.task import Task
from envs.task.registry import task_from_spec

__all__ = [
    "FEATURES",
    "STEP_KINDS",
    "WindowResult",
    "WindowSample",
    "base_gradients",
    "cosine",
    "cross_fit",
    "evaluate_shards",
    "explained_fraction",
    "fit_coefficients",
    "gradient_features",
    "predict",
    "shard_samples",
]

EPS = 1e-8
"""The epsilon of Adam's denominator (``torch.optim.Adam``'s default)."""

FEATURES: tuple[str, ...] = ("grad", "ema_0.5", "ema_0.9", "ema_0.99", "heavy_ball", "adam", "rms_grad", "sign")
"""Per-coordinate features at step t, from g_0 .. g_t only: ``grad`` g_t; ``ema_b`` the bias-corrected exponential
moving average of g with decay b; ``heavy_ball`` the buffer of SGD with momentum 0.9 and no dampening (the
``momentum`` optimizer's update direction, sum_k 0.9^k g_{t-k}, not bias-corrected); ``adam`` Adam's direction
m_hat / (sqrt(v_hat) + 1e-8) with betas (0.9, 0.999); ``rms_grad`` g_t / (sqrt(v_hat) + 1e-8); ``sign`` sign(g_t)."""

STEP_KINDS: tuple[str, ...] = ("geodesic", "chord", "teacher")
"""The steps predicted: the window's first target step, the chord's first step and the base optimizer's step."""


def base_gradients(problem: Task, seed: int, iterates: Tensor, steps: int | None = None) -> Tensor:
    """The base run's minibatch gradients ``(steps, P)``: row s is the gradient at ``iterates[s]`` on batch s.

    Args:
        problem: the problem instance of the base run (``task.instance(seed)``).
        seed: the base run's seed (initial model structure and batch order).
        iterates: ``(N + 1, P)`` the recorded iterates, in ``model.parameters()`` order.
        steps: gradients of steps 0 .. steps - 1 (default N).
    """
    steps = iterates.shape[0] - 1 if steps is None else steps
    model = problem.init_model(seed)
    params = list(model.parameters())
    batches = problem.batches(seed)
    rows = []
    for s in range(steps):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(iterates[s].to(params[0]), params)
        grads = torch.autograd.grad(problem.loss(model, next(batches)), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows) if rows else iterates.new_zeros(0, iterates.shape[1])


def gradient_features(gradients: Tensor, names: Sequence[str] = FEATURES) -> Tensor:
    """Features ``(n, P, k)`` at every step t = 0 .. n-1 from the gradients ``(n, P)`` up to t (in float64).

    Args:
        gradients: ``(n, P)`` g_0 .. g_{n-1}.
        names: which of :data:`FEATURES`, in this order (the columns).
    """
    unknown = [name for name in names if name not in FEATURES]
    if unknown:
        raise ValueError(f"unknown features {unknown}; valid: {', '.join(FEATURES)}")
    g = gradients.to(torch.float64)
    decays = {0.5, 0.9, 0.99}
    ema = {b: torch.zeros_like(g[0]) for b in decays}
    buffer = torch.zeros_like(g[0])
    first, second = torch.zeros_like(g[0]), torch.zeros_like(g[0])
    rows = []
    for t in range(g.shape[0]):
        for b in decays:
            ema[b] = b * ema[b] + (1 - b) * g[t]
        buffer = g[t] if t == 0 else 0.9 * buffer + g[t]
        first = 0.9 * first + 0.1 * g[t]
        second = 0.999 * second + 0.001 * g[t] ** 2
        denominator = (second / (1 - 0.999 ** (t + 1))).sqrt() + EPS
        values = {
            "grad": g[t],
            **{f"ema_{b:g}": ema[b] / (1 - b ** (t + 1)) for b in decays},
            "heavy_ball": buffer,
            "adam": first / (1 - 0.9 ** (t + 1)) / denominator,
            "rms_grad": g[t] / denominator,
            "sign": g[t].sign(),
        }
        rows.append(torch.stack([values[name] for name in names], dim=-1))
    return torch.stack(rows) if rows else g.new_zeros(0, g.shape[1], len(names))


@dataclass(frozen=True)
class WindowSample:
    """One connected window: its features at t and the steps to predict."""

    seed: int
    """Base-run seed (the unit of the held-out split)."""
    t: int
    """Start step of the window."""
    normalized_length: float
    """The window's bend (path length over the chord)."""
    features: Tensor
    """``(P, k)`` features at step t (:func:`gradient_features`)."""
    steps: dict[str, Tensor]
    """``(P,)`` the step of each kind in :data:`STEP_KINDS`, in float64."""


def shard_samples(shard: dict[str, Any], names: Sequence[str] = FEATURES) -> list[WindowSample]:
    """The connected windows of a shard (:func:`~metaopt.targets.dataset.load_shard`) as samples.

    The problem is rebuilt from the shard's task spec (on the CPU, in the iterates' dtype), the gradients are
    recomputed up to the last window start.
    """
    windows = [w for w in shard["windows"] if w["connected"]]
    if not windows:
        return []
    seed = int(shard["seed"])
    iterates = shard["iterates"]
    problem = task_from_spec(shard["task"], dtype=iterates.dtype).instance(seed)
    last = max(int(w["t"]) for w in windows)
    features = gradient_features(base_gradients(problem, seed, iterates, last + 1), names)
    theta = iterates.to(torch.float64)
    samples = []
    for w in windows:
        t, targets = int(w["t"]), w["targets"].to(torch.float64)
        steps = {"geodesic": targets[1] - targets[0], "chord": (targets[-1] - targets[0]) / (targets.shape[0] - 1),
                 "teacher": theta[t + 1] - theta[t]}  # fmt: skip
        samples.append(WindowSample(seed, t, float(w["normalized_length"]), features[t], steps))
    return samples


def fit_coefficients(features: Sequence[Tensor], steps: Sequence[Tensor]) -> Tensor:
    """The least-squares coefficients ``(k,)`` of ``step ~ features @ c`` over all windows, each weighing the same.

    Args:
        features: one ``(P, k)`` per window.
        steps: one ``(P,)`` per window; a zero step carries no weight.
    """
    rows, values = [], []
    for f, d in zip(features, steps, strict=True):
        norm = float(d.norm())
        if norm > 0:
            rows.append(f.to(torch.float64) / norm)
            values.append(d.to(torch.float64) / norm)
    if not rows:
        raise ValueError("no window with a nonzero step to fit on")
    a, b = torch.cat(rows), torch.cat(values)
    return torch.linalg.lstsq(a, b.unsqueeze(1), driver="gelsd").solution.squeeze(1)


def predict(features: Tensor, coefficients: Tensor) -> Tensor:
    """The predicted step ``(P,)`` of features ``(P, k)``."""
    return features.to(torch.float64) @ coefficients.to(torch.float64)


def explained_fraction(prediction: Tensor, step: Tensor) -> float:
    """R^2 = 1 - ||step - prediction||^2 / ||step||^2 (NaN for a zero step)."""
    total = float(step.double().pow(2).sum())
    return 1 - float((step.double() - prediction.double()).pow(2).sum()) / total if total > 0 else float("nan")


def cosine(prediction: Tensor, step: Tensor) -> float:
    """Cosine of the angle between the prediction and the step (0 when either is zero)."""
    norms = float(prediction.double().norm() * step.double().norm())
    return float(prediction.double() @ step.double()) / norms if norms > 0 else 0.0


@dataclass(frozen=True)
class WindowResult:
    """A held-out window's scores for one step kind."""

    seed: int
    t: int
    normalized_length: float
    kind: str
    """One of :data:`STEP_KINDS`."""
    r2: float
    """Explained fraction of the step by the fit that did not see this seed."""
    cosine: float
    """Cosine of the prediction with the step."""


def cross_fit(samples: Sequence[WindowSample], kind: str) -> tuple[list[WindowResult], Tensor]:
    """Two-fold cross-fitting over base seeds; returns every window's held-out scores and the mean coefficients.

    The sorted seeds are split into ``seeds[0::2]`` and ``seeds[1::2]``; each half is scored by the fit on the other.

    Raises:
        ValueError: fewer than two base seeds, or an unknown kind.
    """
    if kind not in STEP_KINDS:
        raise ValueError(f"kind must be one of {', '.join(STEP_KINDS)}, got {kind!r}")
    seeds = sorted({s.seed for s in samples})
    if len(seeds) < 2:
        raise ValueError(f"cross-fitting needs windows of at least two base seeds, got {seeds}")
    halves = [set(seeds[0::2]), set(seeds[1::2])]
    results, fitted = [], []
    for held_out, train in (halves, halves[::-1]):
        fit_on = [s for s in samples if s.seed in train]
        coefficients = fit_coefficients([s.features for s in fit_on], [s.steps[kind] for s in fit_on])
        fitted.append(coefficients)
        for s in samples:
            if s.seed in held_out:
                guess, step = predict(s.features, coefficients), s.steps[kind]
                scores = explained_fraction(guess, step), cosine(guess, step)
                results.append(WindowResult(s.seed, s.t, s.normalized_length, kind, *scores))
    return sorted(results, key=lambda r: (r.seed, r.t)), torch.stack(fitted).mean(0)


def evaluate_shards(
    shards: Sequence[dict[str, Any]], names: Sequence[str] = FEATURES
) -> tuple[dict[str, list[WindowResult]], dict[str, Tensor]]:
    """Every kind's held-out window scores and mean coefficients over the connected windows of a dataset's shards."""
    samples = [sample for shard in shards for sample in shard_samples(shard, names)]
    scored = {kind: cross_fit(samples, kind) for kind in STEP_KINDS}
    return {kind: r for kind, (r, _) in scored.items()}, {kind: c for kind, (_, c) in scored.items()}
