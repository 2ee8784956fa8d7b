"""The statistics of the comparison: learning-rate choice, intervals, steps to reach a target, paired differences.

Pure functions over arrays. Conventions, also stated in every report:

- *final loss* of a run: the mean training loss over its last ``window`` steps (each measured on that step's batch
  before the update). Averaging a few steps keeps the minibatch noise of one batch out of the learning-rate choice.
- *tuning*: the learning rate with the lowest mean final loss over the tuning seeds; a learning rate whose run diverged
  (NaN or infinite loss) on any tuning seed is never chosen. Ties go to the smaller learning rate.
- *intervals*: 95% Student-t intervals of the mean over evaluation seeds (``mean ± t_{0.975, n-1} · sd / sqrt(n)``).
  Runs that diverged are left out of means and intervals and counted separately.
- *steps to reach* a target: the first step whose *mean* training-loss curve is at or below the target (0 = the
  initial loss already is); ``reached`` counts the seeds whose own curve gets there. Speed-up over the reference =
  reference steps / optimizer steps; when only the optimizer gets there within the horizon, ``horizon / steps`` is a
  lower bound.
- *paired difference*: final loss minus the reference optimizer's on the same evaluation seed, with its t-interval;
  pairing removes the seed-to-seed spread that dominates problem families such as the quadratics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit  # Student-t quantile; scipy.stats would add seconds of import time

__all__ = [
    "Interval",
    "TargetResult",
    "Tuning",
    "choose_lr",
    "final_loss",
    "paired_difference",
    "reach_target",
    "steps_to_reach",
    "t_interval",
]

CONFIDENCE = 0.95
"""Coverage of every interval the harness reports."""


def final_loss(losses: Sequence[float], window: int) -> float:
    """Mean of the last ``window`` training losses of a run (NaN for an empty curve)."""
    tail = list(losses)[-window:]
    return float(np.mean(tail)) if tail else math.nan


@dataclass(frozen=True)
class Tuning:
    """The outcome of tuning one optimizer's learning rate on one task."""

    lrs: tuple[float, ...]
    """The grid, ascending."""
    scores: tuple[float, ...]
    """Mean final loss over the tuning seeds per learning rate; NaN where a seed diverged."""
    diverged: tuple[int, ...]
    """Number of tuning seeds that diverged per learning rate."""
    seeds: int
    """Number of tuning seeds."""
    chosen: float | None
    """The chosen learning rate; None when every learning rate diverged on some seed."""

    @property
    def at_edge(self) -> bool:
        """True when the choice is the smallest or largest grid point (the grid may be too narrow)."""
        return self.chosen is not None and len(self.lrs) > 1 and self.chosen in (self.lrs[0], self.lrs[-1])

    @property
    def diverged_runs(self) -> int:
        """Tuning runs that diverged, over the whole grid."""
        return sum(self.diverged)


def choose_lr(lrs: Sequence[float], finals: np.ndarray, diverged: np.ndarray) -> Tuning:
    """Pick the learning rate with the lowest mean final loss among those that never diverged.

    Args:
        lrs: learning rates, one per row.
        finals: ``(L, S)`` final loss of each (learning rate, tuning seed).
        diverged: ``(L, S)`` bool, True where that run diverged.
    """
    order = np.argsort(np.asarray(lrs), kind="stable")
    lrs_sorted = [float(lrs[i]) for i in order]
    finals, diverged = np.asarray(finals, dtype=np.float64)[order], np.asarray(diverged, dtype=bool)[order]
    counts = diverged.sum(axis=1)
    scores = np.where(counts == 0, finals.mean(axis=1), np.nan)
    stable = np.isfinite(scores)  # a finite mean of finite losses
    chosen = lrs_sorted[int(np.nanargmin(np.where(stable, scores, np.nan)))] if stable.any() else None
    return Tuning(tuple(lrs_sorted), tuple(map(float, scores)), tuple(map(int, counts)), finals.shape[1], chosen)


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and the half-width of its confidence interval (NaN when ``n < 2``)."""

    mean: float
    half: float
    n: int

    def __str__(self) -> str:
        if self.n == 0:
            return "–"
        return f"{self.mean:.4g} ± {self.half:.2g}" if math.isfinite(self.half) else f"{self.mean:.4g}"


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Mean and t-interval half-width along axis 0 of ``values`` (``(N, ...)`` -> two ``(...)`` arrays).

    The half-width is NaN with fewer than two values.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n == 0:
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan.copy()
    mean = values.mean(axis=0)
    if n < 2:
        return mean, np.full_like(mean, np.nan)
    quantile = float(stdtrit(n - 1, 0.5 + confidence / 2))
    return mean, quantile * values.std(axis=0, ddof=1) / math.sqrt(n)


def interval(values: Sequence[float] | np.ndarray) -> Interval:
    """:func:`t_interval` of a 1-d sample as an :class:`Interval`."""
    array = np.asarray(values, dtype=np.float64)
    mean, half = t_interval(array)
    return Interval(float(mean), float(half), int(array.shape[0]))


def steps_to_reach(curve: np.ndarray, target: float) -> int | None:
    """First index ``k`` with ``curve[k] <= target`` (the loss after ``k`` updates), or None if never."""
    hits = np.flatnonzero(np.asarray(curve) <= target)
    return int(hits[0]) if hits.size else None


@dataclass(frozen=True)
class TargetResult:
    """Steps one optimizer needs to bring its mean training loss to a target, and its speed-up over the reference."""

    target: float
    """The training loss to reach."""
    steps: int | None
    """First step where the mean curve is at or below the target; None if it never is within the horizon."""
    reached: int
    """Evaluation seeds whose own curve reaches the target."""
    seeds: int
    """Evaluation seeds counted (the non-diverged ones)."""
    speedup: float | None
    """Reference steps / these steps; None when undefined (this optimizer never gets there, or both need 0 steps)."""
    lower_bound: bool = False
    """True when the reference never reached the target, so ``speedup = horizon / steps`` is a lower bound."""

    @property
    def speedup_text(self) -> str:
        """``1.8×``, ``>2.5×`` or ``–``."""
        if self.speedup is None:
            return "–"
        return f"{'>' if self.lower_bound else ''}{self.speedup:.3g}×"


def reach_target(curves: np.ndarray, target: float, horizon: int, reference_curve: np.ndarray | None) -> TargetResult:
    """Steps to reach ``target`` for one optimizer and its speed-up over the reference.

    Args:
        curves: ``(N, T)`` training-loss curves of the non-diverged evaluation seeds.
        target: training loss to reach.
        horizon: number of steps of every run.
        reference_curve: the reference optimizer's mean curve ``(T,)``; None when there is no reference (no speed-up).
    """
    curves = np.asarray(curves, dtype=np.float64)
    steps = steps_to_reach(curves.mean(axis=0), target) if curves.shape[0] else None
    reached = int((curves <= target).any(axis=1).sum()) if curves.size else 0
    speedup: float | None = None
    lower = False
    if reference_curve is not None and steps is not None:
        reference_steps = steps_to_reach(reference_curve, target) if len(reference_curve) else None
        if steps == 0:  # paired runs share their initial loss, so then the reference needs 0 steps too
            speedup = 1.0 if reference_steps == 0 else None
        elif reference_steps is not None:
            speedup = reference_steps / steps
        elif len(reference_curve):
            speedup, lower = horizon / steps, True
    return TargetResult(target, steps, reached, curves.shape[0], speedup, lower)


@dataclass(frozen=True)
class Paired:
    """Final loss minus the reference optimizer's on the same evaluation seeds."""

    difference: Interval
    """Mean difference and its t-interval (negative: lower loss than the reference)."""
    wins: int
    """Seeds where this optimizer's final loss is strictly lower."""


def paired_difference(finals: np.ndarray, reference_finals: np.ndarray) -> Paired:
    """Paired comparison over the seeds where neither run diverged (NaN marks a diverged run)."""
    a, b = np.asarray(finals, dtype=np.float64), np.asarray(reference_finals, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    diff = a[both] - b[both]
    return Paired(interval(diff), int((diff < 0).sum()))
