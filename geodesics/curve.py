"""Linear interpolation between models and the certified maximum of the loss along a segment (DSS paper, §3).

A segment [a, b] of the string passes when the loss along theta(t) = (1 - t) a + t b stays below L0 for all t in
[0, 1]. The curve is evaluated on a grid that includes both ends; then the highest grid peaks are refined by a batched
zoom (each round evaluates points across a bracket around the best point and shrinks the bracket), so the reported
maximum is not an artefact of the grid. For each segment the result carries:

* ``value``: the largest loss actually evaluated (a lower bound of the true maximum);
* ``upper = value + tolerance``: an upper bound of the peak, valid when the loss is concave between the evaluated
  neighbours of the best point (true near any smooth maximum once the bracket is small): for concave f with best value
  f_b and neighbours f_l, f_r at distance h, f <= f_b + max(f_b - f_l, f_b - f_r) on [x_b - h, x_b + h].

DSS accepts a segment only when ``upper <= L0``. The paper preset (``configs/geodesics/sweep/paper/``) instead follows
the public reference code: a grid of 100 points that never reaches t = 1, no refinement and no slack
(``include_end=false``, ``refine_rounds=0``, ``bound=false``), with acceptance relaxed to 1.1 L0 by DSS.

Every segment of every string is evaluated in one batched call per stage, in chunks that bound the memory taken by
the interpolated vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from envs.tooling.config import check_range
from geodesics.space import ParamSpace

__all__ = ["CurveConfig", "SegmentMax", "evaluate_segments", "interpolate", "interpolation_curve", "segment_maxima"]

_POINT_BUDGET = 1 << 28  # bytes of interpolated vectors materialised at once


@dataclass
class CurveConfig:
    """How segments are checked."""

    num_points: int = 64
    """Grid points per segment, both ends included."""
    refine_peaks: int = 2
    """How many of the highest grid peaks of each segment are refined."""
    refine_rounds: int = 4
    """Zoom rounds per peak; each shrinks the bracket by (refine_points + 1) / 2."""
    refine_points: int = 8
    """Points evaluated across the bracket per round (its two ends included)."""
    include_end: bool = True
    """The grid runs from t = 0 to t = 1 inclusive; false: t = i / num_points for i < num_points, the public
    reference code's grid, which never checks t = 1 (the paper preset)."""
    bound: bool = True
    """Report the certified upper bound (largest evaluated loss plus the concavity slack); false: the largest
    evaluated loss alone, as the reference code does (the paper preset)."""

    def __post_init__(self) -> None:
        check_range(self, "num_points", low=2, integer=True)  # both ends
        check_range(self, "refine_points", low=3, integer=True)
        check_range(self, "refine_rounds", low=0, integer=True)
        check_range(self, "refine_peaks", low=1, integer=True)


@dataclass(frozen=True)
class SegmentMax:
    """The maximum of the loss along one segment."""

    t: float
    """Where the largest evaluated loss is, in [0, 1] along the segment."""
    value: float
    """Largest evaluated loss (a lower bound of the true maximum)."""
    tolerance: float
    """``upper - value``: the certified slack from the final bracket."""
    evaluations: int
    """Loss evaluations spent on the segment."""

    @property
    def upper(self) -> float:
        """Upper bound of the segment maximum (under local concavity at the peak)."""
        return self.value + self.tolerance


def interpolate(a: Tensor, b: Tensor, ts: Tensor) -> Tensor:
    """``(len(ts), P)`` points (1 - t) a + t b; ``torch.lerp`` returns a and b exactly at t = 0 and t = 1."""
    return torch.lerp(a.unsqueeze(0), b.unsqueeze(0), ts.to(a.dtype).unsqueeze(1))


def interpolation_curve(space: ParamSpace, a: Tensor, b: Tensor, num: int = 64) -> tuple[Tensor, Tensor]:
    """``(ts (num,), losses (num,))``: evaluation loss along the segment from a to b on a grid including both ends."""
    a, b = space.check(a), space.check(b)
    ts = torch.linspace(0.0, 1.0, num, device=space.device, dtype=torch.float64)
    return ts, evaluate_segments(space, a.unsqueeze(0), b.unsqueeze(0), ts.unsqueeze(0))[0]


def evaluate_segments(space: ParamSpace, starts: Tensor, ends: Tensor, ts: Tensor) -> Tensor:
    """Losses ``(S, k)`` at ``ts (S, k)`` along segments ``starts[s] -> ends[s]``, batched across all segments."""
    segments, per_segment = ts.shape
    itemsize = starts.element_size() * starts.shape[1]
    rows = max(per_segment, _POINT_BUDGET // max(1, itemsize))
    group = max(1, rows // per_segment)
    out = []
    for i in range(0, segments, group):
        sl = slice(i, i + group)
        points = torch.lerp(starts[sl].unsqueeze(1), ends[sl].unsqueeze(1), ts[sl].to(starts.dtype).unsqueeze(2))
        out.append(space.batched_eval_loss(points.reshape(-1, starts.shape[1])).reshape(-1, per_segment))
    return torch.cat(out).to(torch.float64)


def segment_maxima(
    space: ParamSpace,
    starts: Tensor,
    ends: Tensor,
    config: CurveConfig | None = None,
    offset: Callable[[Tensor], Tensor] | None = None,
) -> list[SegmentMax]:
    """The certified maximum of the evaluation loss along each segment ``starts[s] -> ends[s]``.

    Args:
        space: the parameter space.
        starts: ``(S, P)`` first ends of the segments.
        ends: ``(S, P)`` second ends.
        config: grid and refinement settings.
        offset: ``ts (S, n) -> (S, n)`` subtracted from the losses at ``ts`` before the maxima are sought (a level
            that varies along each segment, :mod:`geodesics.levels`): the result is then the certified maximum of
            F - offset. Subtracting a function linear in t leaves the concavity the bound rests on unchanged.
    """
    config = config or CurveConfig()
    starts, ends = space.check(starts, batched=True), space.check(ends, batched=True)
    segments = starts.shape[0]
    if segments == 0:
        return []
    if config.include_end:
        grid = torch.linspace(0.0, 1.0, config.num_points, device=space.device, dtype=torch.float64)
    else:
        grid = torch.arange(config.num_points, device=space.device, dtype=torch.float64) / config.num_points
    values = evaluate_segments(space, starts, ends, grid.expand(segments, -1))
    if offset is not None:
        values = values - offset(grid.expand(segments, -1))
    peaks = _top_peaks(values, config.refine_peaks)  # (S, R) grid indices
    spacing = 1.0 / (config.num_points - 1 if config.include_end else config.num_points)
    centre = grid[peaks]  # (S, R)
    best = values.gather(1, peaks)
    half = torch.full_like(centre, spacing)
    left = torch.where(peaks > 0, values.gather(1, (peaks - 1).clamp(min=0)), torch.nan)
    right = torch.where(
        peaks < config.num_points - 1, values.gather(1, (peaks + 1).clamp(max=config.num_points - 1)), torch.nan
    )
    k = config.refine_points
    peak_starts = starts.repeat_interleave(peaks.shape[1], 0)  # one row per (segment, peak)
    peak_ends = ends.repeat_interleave(peaks.shape[1], 0)
    offsets = torch.linspace(-1.0, 1.0, k, device=space.device, dtype=torch.float64)
    for _ in range(config.refine_rounds):
        lo = (centre - half).clamp(0.0, 1.0)
        hi = (centre + half).clamp(0.0, 1.0)
        ts = (lo + hi).unsqueeze(-1) / 2 + (hi - lo).unsqueeze(-1) / 2 * offsets  # (S, R, k)
        vals = evaluate_segments(space, peak_starts, peak_ends, ts.reshape(-1, k)).reshape(ts.shape)
        if offset is not None:
            vals = vals - offset(ts.reshape(segments, -1)).reshape(ts.shape)
        j = vals.argmax(dim=-1, keepdim=True)
        improved = vals.gather(-1, j).squeeze(-1) >= best
        new_centre = ts.gather(-1, j).squeeze(-1)
        new_left = torch.where(j > 0, vals.gather(-1, (j - 1).clamp(min=0)), torch.nan).squeeze(-1)
        new_right = torch.where(j < k - 1, vals.gather(-1, (j + 1).clamp(max=k - 1)), torch.nan).squeeze(-1)
        centre = torch.where(improved, new_centre, centre)
        best = torch.where(improved, vals.gather(-1, j).squeeze(-1), best)
        left = torch.where(improved, new_left, left)
        right = torch.where(improved, new_right, right)
        half = (hi - lo) / (k - 1)
    slack = torch.stack([best - left, best - right], dim=-1).nan_to_num(nan=-torch.inf).amax(dim=-1).clamp(min=0.0)
    slack = torch.where(torch.isfinite(slack), slack, torch.zeros_like(slack))
    # the segment's answer: its highest refined peak, or the grid maximum if that is higher (it cannot be lower)
    winner = best.argmax(dim=1, keepdim=True)
    evaluations = config.num_points + peaks.shape[1] * config.refine_rounds * k
    out = []
    for s in range(segments):
        r = int(winner[s])
        tolerance = float(slack[s, r]) if config.bound else 0.0
        out.append(SegmentMax(float(centre[s, r]), float(best[s, r]), tolerance, evaluations))
    return out


def _top_peaks(values: Tensor, count: int) -> Tensor:
    """Indices ``(S, count)`` of the highest local maxima of each row (ends count as peaks; repeats pad short rows)."""
    padded = torch.nn.functional.pad(values, (1, 1), value=-torch.inf)
    is_peak = (values >= padded[:, :-2]) & (values >= padded[:, 2:])
    scores = torch.where(is_peak, values, torch.full_like(values, -torch.inf))
    order = scores.argsort(dim=1, descending=True)[:, :count]
    first = order[:, :1].expand_as(order)
    return torch.where(scores.gather(1, order) > -torch.inf, order, first)
