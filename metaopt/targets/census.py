"""Is there curvature to follow? The geometry of optimizer windows, and what following it could be worth.

The proposal's bet is that the geodesic joining two iterates theta_t and theta_{t+T} of an optimizer *inside* a level
set is a better target than the path the optimizer took. That needs the level set to bend between them: if the chord
from theta_t to theta_{t+T} stays below the level, the geodesic *is* the chord. This module measures, per window:

- :func:`chord_barrier`: the certified maximum of the loss along the chord over the window's level (a dense grid with
  both ends and refined peaks, :func:`geodesics.segment_maxima`); a window is *blocked* when it exceeds 1;
- :func:`inside_length`: for a blocked window, the length of the DSS path inside the level set over its own chord
  (no projection leg: only the part inside the level is level-set curvature); 1 for an unblocked one;
- the oracle (:func:`window_loss`, :func:`progress`, :func:`retime`): the window loss, the L2L objective's sum of
  F over the window's T steps, of the optimizer's own iterates, of the chord and of the geodesic, each at constant
  speed and re-timed to the optimizer's progress, so that the shape of a path and its timing are told apart. A
  learned follower of a target cannot do better than the target itself.

Everything counts loss evaluations, not seconds. ``scripts/census.py`` runs the census over tasks, optimizers, T and
seeds, resumably, and writes the table and the figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from geodesics import BeadString, CurveConfig, DSSConfig, ParamSpace, connect, polyline_at, segment_maxima

__all__ = [
    "ChordCheck",
    "chord_barrier",
    "inside_length",
    "path_length",
    "path_efficiency",
    "progress",
    "retime",
    "window_loss",
]


@dataclass(frozen=True)
class ChordCheck:
    """The loss along the chord of a window against the window's level."""

    peak: float
    """Certified upper bound of the loss along the chord (ends included)."""
    level: float
    """The level the chord is checked against."""
    evaluations: int
    """Loss evaluations spent."""

    @property
    def ratio(self) -> float:
        """``peak / level``: above 1 the chord leaves the level set (the window is blocked)."""
        return self.peak / self.level

    @property
    def blocked(self) -> bool:
        """Whether the chord leaves the level set, so the geodesic inside it must bend."""
        return self.peak > self.level


def chord_barrier(
    space: ParamSpace, a: Tensor, b: Tensor, level: float, curve: CurveConfig | None = None
) -> ChordCheck:
    """The certified peak of the evaluation loss along the chord from ``a`` to ``b``, against ``level``."""
    [peak] = segment_maxima(space, a.unsqueeze(0), b.unsqueeze(0), curve or CurveConfig())
    return ChordCheck(peak=peak.upper, level=float(level), evaluations=peak.evaluations)


def inside_length(
    space: ParamSpace, a: Tensor, b: Tensor, level: float, dss: DSSConfig, check: ChordCheck | None = None
) -> tuple[float, BeadString | None]:
    """The length of the path inside the level set from ``a`` to ``b``, over the chord; 1 when the chord is inside.

    Returns:
        ``(length, string)``: the DSS string's normalized length and the string (None for an unblocked chord, whose
        geodesic is the chord itself). A string that did not connect is returned as it is; its length is NaN.
    """
    check = check if check is not None else chord_barrier(space, a, b, level, dss.curve)
    if not check.blocked:
        return 1.0, None
    string = connect(space, a, b, level, dss)
    return (string.normalized_length if string.connected else float("nan")), string


def progress(iterates: Tensor) -> Tensor:
    """``(T + 1,)`` the optimizer's progress along its own path: its arc length travelled by each step over the whole.

    0 at the first iterate and exactly 1 at the last (steps that do not move keep it); a path that does not move at
    all is given constant speed.
    """
    steps = (iterates[1:].double() - iterates[:-1].double()).norm(dim=1).cpu()
    travelled = torch.cat([torch.zeros(1, dtype=torch.float64), steps.cumsum(0)])
    total = float(travelled[-1])
    if total == 0:
        return torch.linspace(0, 1, len(iterates), dtype=torch.float64)
    out = travelled / total
    out[-1] = 1.0
    return out.clamp(0, 1)


def retime(path: Tensor, fractions: Tensor) -> Tensor:
    """The points of the polyline ``path (K, P)`` at arc-length ``fractions (T + 1,)``: the path run on that clock.

    ``torch.linspace(0, 1, T + 1)`` runs it at constant speed; :func:`progress` of an optimizer's iterates runs it on
    the optimizer's clock. Either way the points lie on the same path, in order, and the ends are exact.
    """
    return polyline_at(path, fractions).to(path.dtype)


def window_loss(space: ParamSpace, points: Tensor) -> float:
    """The L2L objective of a window: the sum of the evaluation loss F over ``points (T + 1, P)`` after the first."""
    return float(space.batched_eval_loss(points[1:]).double().sum())


def path_length(points: Tensor) -> float:
    """The length of the polyline ``points (K, P)``: the sum of its steps' norms."""
    return float((points[1:].double() - points[:-1].double()).norm(dim=1).sum())


def path_efficiency(iterates: Tensor, geodesic_length: float) -> float:
    """How directly an optimizer travelled: the geodesic between its ends over the length of the path it took.

    1: it went the shortest way inside the level set; 0.1: it went ten times as far.

    Args:
        iterates: the run ``(N + 1, P)``.
        geodesic_length: the length of the certified low-loss path between ``iterates[0]`` and ``iterates[-1]``
            (the chord's length when the chord stays inside the level set).
    """
    travelled = path_length(iterates)
    return geodesic_length / travelled if travelled > 0 else 1.0
