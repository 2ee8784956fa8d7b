"""Invariants a wrong DSS would break: the t = 1 end is checked, beads reach alpha * L0, beads start at t*, and a
string with a reason is never connected. Each test fails on a realistic mutant (see scripts/mutation_pass.py)."""

from __future__ import annotations

import pytest
import torch

from geodesics import CurveConfig, DSSConfig, ParamSpace, SegmentMax, connect, segment_maxima
from geodesics.finders.common import finish_string, new_bead
from tests.geodesics.toys import AnalyticTask, annulus


def late_ramp(theta: torch.Tensor) -> torch.Tensor:
    """Zero until x = 0.999, then rising steeply to 1 at x = 1: the maximum sits exactly at the t = 1 end."""
    return torch.relu(theta[0] - 0.999) * 1000 + 0 * theta[1]


def test_the_t1_end_of_a_segment_is_always_checked() -> None:
    space = ParamSpace(AnalyticTask(late_ramp))
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    for config in (CurveConfig(), CurveConfig(num_points=7, refine_rounds=6), CurveConfig(refine_peaks=3)):
        (forward,) = segment_maxima(space, a[None], b[None], config)
        (backward,) = segment_maxima(space, b[None], a[None], config)
        end = float(late_ramp(b))
        assert forward.value == end and forward.t == 1.0 and forward.upper >= end
        assert backward.value == end and backward.t == 0.0


def test_beads_are_trained_to_alpha_times_the_threshold() -> None:
    space = ParamSpace(AnalyticTask(annulus))
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])
    for alpha in (0.5, 0.9):
        string = connect(space, a, b, 0.02, DSSConfig(alpha=alpha, check_every=1))
        assert string.connected and string.num_beads > 2
        assert bool((string.bead_losses[1:-1] <= alpha * 0.02).all())


def bump_at_03(theta: torch.Tensor) -> torch.Tensor:
    """A barrier of height 1 centred at x = 0.3 on the segment (0, 0) -> (1, 0): asymmetric about the midpoint."""
    return torch.exp(-(((theta[0] - 0.3) / 0.05) ** 2)) + theta[1] ** 2


def test_a_new_bead_starts_at_the_argmax_of_its_segment_not_the_midpoint() -> None:
    space = ParamSpace(AnalyticTask(bump_at_03))
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    frozen = DSSConfig(max_rounds=1, max_steps=1, lr=1e-12, bead_noise=0.0, check_every=1)
    string = connect(space, a, b, 0.5, frozen)
    assert abs(float(string.beads[1][0]) - 0.3) < 1e-3  # inserted at t* = 0.3 (and barely moved)
    midpoint = connect(space, a, b, 0.5, DSSConfig(**{**frozen.__dict__, "t_star": "midpoint"}))
    assert abs(float(midpoint.beads[1][0]) - 0.5) < 1e-3
    check = SegmentMax(t=0.25, value=1.0, tolerance=0.0, evaluations=1)
    jitter = torch.Generator().manual_seed(0)
    assert torch.equal(new_bead(a, b, check, frozen, jitter), torch.lerp(a, b, 0.25))


def test_a_string_with_a_reason_is_not_connected_even_if_its_segments_pass() -> None:
    space = ParamSpace(AnalyticTask(annulus))
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    passing = [SegmentMax(t=0.5, value=0.001, tolerance=0.0, evaluations=1)]
    kwargs = dict(method="greedy", history=[], config=DSSConfig(), initial_segment_max=0.001)
    ok = finish_string(space, [a, b], [0.0, 0.0], passing, 0.01, reason="", **kwargs)
    assert ok.connected and ok.reason == ""
    gave_up = finish_string(space, [a, b], [0.0, 0.0], passing, 0.01, reason="time: the budget ran out", **kwargs)
    assert not gave_up.connected and gave_up.reason.startswith("time")
    failing = [SegmentMax(t=0.5, value=0.02, tolerance=0.0, evaluations=1)]
    assert not finish_string(space, [a, b], [0.0, 0.0], failing, 0.01, reason="", **kwargs).connected


def test_an_endpoint_just_above_the_threshold_is_refused() -> None:
    space = ParamSpace(AnalyticTask(annulus))
    a, b = torch.tensor([1.05, 0.0]), torch.tensor([-1.0, 0.0])  # F(a) = 0.0025
    with pytest.raises(ValueError, match=r"endpoint a has evaluation loss 0.0025 above the threshold L0 = 0.002"):
        connect(space, a, b, 0.002)
    assert connect(space, a, b, 0.0026, DSSConfig(max_rounds=0)).threshold == 0.0026
