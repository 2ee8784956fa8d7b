"""Interpolation curves and certified segment maxima."""

from __future__ import annotations

import math

import torch

from geodesics import CurveConfig, ParamSpace, interpolation_curve, segment_maxima
from tests.geodesics.toys import AnalyticTask, annulus


def test_curve_includes_both_ends_exactly() -> None:
    space = ParamSpace(AnalyticTask(annulus))
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.3, 0.9])
    ts, losses = interpolation_curve(space, a, b, num=17)
    assert ts[0] == 0 and ts[-1] == 1 and len(ts) == 17
    assert losses[0] == space.eval_loss(a) and losses[-1] == space.eval_loss(b)


def test_refined_maximum_brackets_the_true_peak() -> None:
    space = ParamSpace(AnalyticTask(annulus))
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])  # loss (|1 - 2t| - 1)^2 peaks at 1 for t = 0.5
    (result,) = segment_maxima(space, a[None], b[None])
    grid_max = float(interpolation_curve(space, a, b, 64)[1].max())
    assert grid_max < 0.97  # the 64-point grid misses the peak ...
    assert 0.999 < result.value <= 1.0 <= result.upper  # ... the refinement does not, and certifies it
    assert abs(result.t - 0.5) < 1e-4


def narrow_bump(theta: torch.Tensor) -> torch.Tensor:
    """A peak of height 1 at x = 0.503, narrower than the grid spacing of 64 points on [0, 1]."""
    return torch.exp(-(((theta[0] - 0.503) / 0.004) ** 2)) + 0 * theta[1]


def test_a_peak_between_grid_points_is_found() -> None:
    space = ParamSpace(AnalyticTask(narrow_bump), strategy="loop")
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    (result,) = segment_maxima(space, a[None], b[None], CurveConfig(num_points=64))
    assert float(interpolation_curve(space, a, b, 64)[1].max()) < 0.3
    assert result.value > 0.999 and result.upper >= 1.0 - 1e-6


def test_many_segments_at_once_match_one_by_one() -> None:
    space = ParamSpace(AnalyticTask(annulus))
    angles = torch.linspace(0, math.pi, 5)
    points = torch.stack([angles.cos(), angles.sin()], dim=1)
    together = segment_maxima(space, points[:-1], points[1:])
    for i, result in enumerate(together):
        (alone,) = segment_maxima(space, points[i : i + 1], points[i + 1 : i + 2])
        assert abs(alone.value - result.value) < 1e-6
    chord_mid = math.cos(math.pi / 8)  # radius at the middle of a 45-degree chord of the unit circle
    assert abs(together[0].value - (chord_mid - 1) ** 2) < 1e-5
