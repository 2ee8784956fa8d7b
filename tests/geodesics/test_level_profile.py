"""Level profiles: a constant one is today's DSS bit for bit; a descent path is certified under its profile at every
arc-length fraction, and bends where the chord rises above the profile; the final checks are those of the final
string; budgets and reasons are today's; bad profiles and unsupported finders are refused clearly."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch

import envs
from geodesics import DSSConfig, ParamSpace, connect, connect_many, segment_maxima, train_to_threshold
from geodesics.cli import main
from geodesics.finders.common import profile_checks, string_stretches
from geodesics.levels import Constant, LevelProfile, Linear, arc_fractions, as_profile
from tests.geodesics.toys import AnalyticTask, annulus

A, B = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.0])
METHODS = ["greedy", "constrained"]


def bumped_slope(theta: torch.Tensor) -> torch.Tensor:
    """F falls from 1 at A = (-1, 0) to 0.5 at B = (1, 0), convex along the chord except for a bump at the origin
    that rises above the linear descent profile (F(0, 0) = 0.825 > L(1/2) = 0.775); a slight detour passes under it."""
    x, y = theta[0], theta[1]
    return 0.5 + 0.125 * (1 - x) ** 2 + 0.5 * y**2 + 0.2 * torch.exp(-(x**2 + y**2) / 0.15**2)


DESCENT = Linear(1.0 + 0.05 * 0.5, 0.5 + 0.05 * 0.5)  # F(A) - s (F(A) - F(B)) + 5% of the drop


@dataclass(frozen=True)
class FlatButVarying(LevelProfile):
    """A constant level that does not say so: it runs through every step of the profile machinery."""

    level: float

    def __call__(self, fractions: torch.Tensor) -> torch.Tensor:
        return torch.full_like(fractions, self.level, dtype=torch.float64)

    @property
    def reference(self) -> float:
        return self.level

    def scaled(self, factor: float) -> FlatButVarying:
        return FlatButVarying(self.level * factor)


def same_string(one, other) -> None:  # noqa: ANN001
    for name in ("beads", "bead_losses", "segment_max", "segment_upper", "segment_t"):
        assert torch.equal(getattr(one, name), getattr(other, name)), name
    assert (one.connected, one.threshold, one.failure) == (other.connected, other.threshold, other.failure)
    assert [r.num_beads for r in one.history] == [r.num_beads for r in other.history]


def ring() -> tuple[ParamSpace, torch.Tensor, torch.Tensor, float]:
    return ParamSpace(AnalyticTask(annulus)), torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0]), 0.01


@cache
def cubic() -> tuple[ParamSpace, torch.Tensor, torch.Tensor, float]:
    task = envs.make_task("poly_cubic")
    return ParamSpace(task), train_to_threshold(task, 0, 0.1), train_to_threshold(task, 1, 0.1), 0.1


@pytest.mark.parametrize(
    ("problem", "method", "rounds"),
    [(ring, "greedy", 2), (ring, "greedy", 10), (ring, "constrained", 2), (ring, "constrained", 10),
     (cubic, "greedy", 2), (cubic, "constrained", 1)],
)  # fmt: skip
def test_a_constant_profile_gives_todays_string_bit_for_bit(problem, method: str, rounds: int) -> None:  # noqa: ANN001
    space, a, b, level = problem()
    toy = problem is ring
    stages = {"stages": 2} if method == "constrained" else {}
    config = DSSConfig.using(method, max_rounds=rounds, max_steps=300 if toy else 100, check_every=1 if toy else 10,
                             **stages)  # fmt: skip
    today = connect(space, a, b, level, config)
    assert today.num_beads > 2  # the chord leaves the level set: beads were trained
    if problem is ring:  # these two reach the finder as the float itself
        same_string(today, connect(space, a, b, Constant(level), config))
        same_string(today, connect(space, a, b, Linear(level, level), config))
    # through the profile code (every segment re-checked each round, bead levels from the profile, offset 0) ...
    same_string(today, connect(space, a, b, FlatButVarying(level), config))
    # ... and beside a string under a varying profile, in one batch
    (mine, _) = connect_many(space, [(a, b), (a, b)], [level, Linear(1.2 * level, level)], config, keys=[0, 1])
    same_string(today, mine)


@pytest.mark.parametrize("method", METHODS)
def test_a_descent_path_stays_under_its_profile_at_every_fraction_and_bends_round_the_bump(method: str) -> None:
    space = ParamSpace(AnalyticTask(bumped_slope))
    fine = torch.linspace(0.0, 1.0, 4001, dtype=torch.float64)
    chord_losses = space.batched_eval_loss(torch.lerp(A[None], B[None], fine[:, None].float())).double()
    assert float((chord_losses - DESCENT(fine)).max()) > 0.04  # the chord rises above the profile ...
    assert connect(space, A, B, DESCENT.start, DSSConfig.using(method)).num_beads == 2  # ... not above F(A)

    string = connect(space, A, B, DESCENT, DSSConfig.using(method))
    assert string.connected and string.reason == "" and string.threshold == DESCENT.start
    assert string.num_beads > 2 and string.normalized_length > 1.001
    assert torch.equal(string.beads[0], A) and torch.equal(string.beads[-1], B)
    losses = space.batched_eval_loss(string.resample_at(fine)).double()
    assert bool((losses <= DESCENT(fine) + 1e-6).all())  # certified: under the profile everywhere along the path
    assert bool((string.segment_upper <= string.threshold).all())


@pytest.mark.parametrize("method", METHODS)
def test_the_final_checks_are_those_of_the_final_fractions(method: str) -> None:
    space = ParamSpace(AnalyticTask(bumped_slope))
    for rounds in (1, 3):
        string = connect(space, A, B, DESCENT, DSSConfig.using(method, max_rounds=rounds))
        beads = list(string.beads.unbind(0))
        again = profile_checks(space, string.beads[:-1], string.beads[1:], DSSConfig().curve,
                               string_stretches(beads, DESCENT))  # fmt: skip
        assert torch.equal(string.segment_upper, torch.tensor([c.upper for c in again], dtype=torch.float64))


def test_arc_fractions_and_the_profile_along_a_segment() -> None:
    beads = [torch.tensor([0.0, 0.0]), torch.tensor([3.0, 0.0]), torch.tensor([3.0, 1.0])]
    assert arc_fractions(beads).tolist() == [0.0, 0.75, 1.0]
    profile = Linear(2.0, 1.0)
    (first, second) = string_stretches(beads, profile)
    assert (first.first, first.last, second.first, second.last) == (0.0, 0.75, 0.75, 1.0)
    # the offset is L(s(t)) - reference: a straight line from L(0.75) - 2 to L(1) - 2 along the second segment
    torch.testing.assert_close(second.offset(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-0.75, -0.875, -1.0],
                               dtype=torch.float64))  # fmt: skip
    # on a segment the check is the maximum of F - L(s) re-based onto the reference (here F = 0 everywhere)
    space = ParamSpace(AnalyticTask(lambda theta: theta.sum() * 0.0))
    (check,) = segment_maxima(space, beads[1][None], beads[2][None], offset=lambda ts: second.offset(ts[0])[None])
    assert check.t == 1.0 and check.value == pytest.approx(2.0 - 1.0)  # where the profile is lowest


def test_bead_targets_are_alpha_times_the_profile_where_the_bead_goes() -> None:
    space = ParamSpace(AnalyticTask(bumped_slope))
    config = DSSConfig(t_star="midpoint", bead_noise=0.0, max_steps=1, check_every=1, alpha=0.9)
    string = connect(space, A, B, DESCENT, config)  # one step is too few: the bead's target is in the reason
    assert string.failure == "bead 1 untrainable"
    assert f"alpha*L(s) = {0.9 * DESCENT.at(0.5):.6g}" in string.reason
    constrained = connect(space, A, B, DESCENT, DSSConfig.using("constrained", stages=1, **_untrainable()))
    assert f"alpha*L(s) = {0.9 * DESCENT.at(0.5):.6g}" in constrained.reason


def _untrainable() -> dict:
    return {"t_star": "midpoint", "bead_noise": 0.0, "max_steps": 1, "check_every": 1, "alpha": 0.9}


@pytest.mark.parametrize("method", METHODS)
def test_budgets_end_a_profile_run_with_todays_reasons(method: str) -> None:
    space = ParamSpace(AnalyticTask(bumped_slope))
    rounds = connect(space, A, B, DESCENT, DSSConfig.using(method, max_rounds=0))
    assert not rounds.connected and rounds.failure == "rounds"
    beads = connect(space, A, B, DESCENT, DSSConfig.using(method, max_beads=2))
    assert not beads.connected and beads.failure == "beads"
    evaluations = connect(space, A, B, DESCENT, DSSConfig.using(method, max_evaluations=1))
    assert not evaluations.connected and evaluations.failure == "evaluations"


def test_bad_profiles_and_finders_without_profiles_are_refused() -> None:
    for bad in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(ValueError, match="start must be a finite number in \\(0, inf\\)"):
            Linear(bad, 0.5)
        with pytest.raises(ValueError, match="end must be a finite number in \\(0, inf\\)"):
            Linear(0.5, bad)
        with pytest.raises(ValueError, match="level must be a finite number in \\(0, inf\\)"):
            Constant(bad)
    with pytest.raises(TypeError, match="a level is a number"):
        as_profile("0.1")  # type: ignore[arg-type]
    space = ParamSpace(AnalyticTask(bumped_slope))
    for method in ("neb", "bezier", "polychain"):
        with pytest.raises(ValueError, match=f"path finder {method} certifies a path against one constant level"):
            connect(space, A, B, DESCENT, DSSConfig.using(method))
    assert connect(space, A, B, Constant(1.1), DSSConfig.using("neb", max_rounds=1)).threshold == 1.1
    with pytest.raises(ValueError, match="endpoint b has evaluation loss 0.5 above its level L\\(1\\) = 0.4"):
        connect(space, A, B, Linear(1.1, 0.4))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["threshold_end=nan"], "threshold_end must be a finite number in [0, inf), got nan"),
        (["threshold_end=-0.1"], "threshold_end must be a finite number in [0, inf), got -0.1"),
        (["threshold_end=0.04", "dss.finder=neb"], "threshold_end (a level profile) needs dss.finder.name constrained"),
    ],
)
def test_bad_profile_values_at_the_command_line_exit_2(argv: list[str], message: str, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    assert main(["connect", *argv, f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_profile_reports_its_highest_level_and_scales_every_level() -> None:
    from geodesics.levels import Constant, Linear

    assert Linear(0.1, 0.3).reference == 0.3 and Linear(0.3, 0.1).reference == 0.3  # the level a string records
    assert Constant(0.2).reference == 0.2
    assert Constant(0.2).scaled(0.5) == Constant(0.1)
    assert Linear(0.4, 0.2).scaled(0.5) == Linear(0.2, 0.1)
    assert Linear(0.4, 0.2).at(0.5) == pytest.approx(0.3) and Linear(0.4, 0.2).at(1.0) == pytest.approx(0.2)
