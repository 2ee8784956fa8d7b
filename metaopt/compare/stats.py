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
  pairing removes the seed-to-seed spread that dominates problem families such as the quadratics. The same pairing
  applies to the evaluation-set loss of the final weights (overfitting shows as a lower training but higher
  evaluation loss).
- *reference-equivalent speed-up*: how many times fewer steps the optimizer needs than the reference for the same
  training loss (:func:`equivalent_speedup`); summarised across tasks by its interquartile mean (:func:`iqm`).
- *wall-clock speed-up*: that speed-up times the reference's wall time per step over the optimizer's
  (:func:`wall_clock_speedup`): how many times less time the optimizer needs for the same training loss, where its
  dearer step is paid for.
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
    "equivalent_speedup",
    "final_loss",
    "iqm",
    "paired_difference",
    "reach_target",
    "steps_to_reach",
    "t_interval",
    "wall_clock_speedup",
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
    """Mean score over the tuning seeds per learning rate (the final training loss, or the evaluation loss with
    ``tune_on: eval``); NaN where a seed diverged."""
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
    """Pick the learning rate with the lowest mean score among those that never diverged.

    Args:
        lrs: learning rates, one per row.
        finals: ``(L, S)`` score (final loss, or evaluation loss) of each (learning rate, tuning seed).
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


def equivalent_speedup(curves: np.ndarray, reference_curve: np.ndarray, horizon: int, window: int) -> float | None:
    """Speed-up over the reference in reference-equivalent steps (the speed-up measure of VeLO and Celo).

    With ``L`` this optimizer's mean final loss (mean curve over the last ``window`` steps) and ``L_ref`` the
    reference's: when ``L <= L_ref``, reference steps to reach ``L_ref`` / this optimizer's steps to reach it (at
    least 1 step each); otherwise the reference's steps to reach ``L`` / ``horizon`` (below 1: the reference got as far
    in fewer steps). None without curves (every run diverged, or no learning rate was stable).

    Args:
        curves: ``(N, T)`` training-loss curves of the non-diverged evaluation seeds.
        reference_curve: the reference's mean curve ``(T,)``.
        horizon: steps of every run.
        window: steps averaged into a final loss.
    """
    curves = np.asarray(curves, dtype=np.float64)
    reference_curve = np.asarray(reference_curve, dtype=np.float64)
    if not curves.shape[0] or not len(reference_curve):
        return None
    mean = curves.mean(axis=0)
    final = final_loss(mean.tolist(), window)
    reference_final = final_loss(reference_curve.tolist(), window)
    if final <= reference_final:
        mine = steps_to_reach(mean, reference_final)
        theirs = steps_to_reach(reference_curve, reference_final)
        return max(theirs if theirs is not None else horizon, 1) / max(mine if mine is not None else horizon, 1)
    theirs = steps_to_reach(reference_curve, final)
    return max(theirs if theirs is not None else horizon, 1) / horizon


def wall_clock_speedup(
    speedup: float | None, seconds_per_step: float | None, reference_seconds_per_step: float | None
) -> float | None:
    """The reference-equivalent ``speedup`` in wall time: ``speedup * reference_seconds_per_step / seconds_per_step``.

    Above 1 the optimizer reaches the reference's final loss (or, below 1 in steps, its own) in less time than the
    reference, its step's cost included. None when the speed-up or either time per step is missing or not positive.
    """
    if speedup is None or seconds_per_step is None or reference_seconds_per_step is None:
        return None
    if not (seconds_per_step > 0 and reference_seconds_per_step > 0 and math.isfinite(speedup)):
        return None
    return speedup * reference_seconds_per_step / seconds_per_step


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle half of the sorted values (Agarwal et al., 2021); NaN if empty.

    With ``n`` values, ``n // 4`` are cut from each end (all of them kept below four values).
    """
    array = np.sort(np.asarray(values, dtype=np.float64))
    if not array.size:
        return math.nan
    cut = array.size // 4
    return float(array[cut : array.size - cut].mean())
