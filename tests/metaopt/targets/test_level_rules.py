"""Level rules of the targets: start gives the chord on a convex task; between descends by projection into a level
set the chord leaves and then stays certified inside it; descent stays under its falling profile and bends where the
chord rises above it; every target sequence runs from theta_t to theta_{t+T} exactly, equally spaced in arc length;
the projection is the nearest point of the level set."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch

import envs
from geodesics import DSSConfig, ParamSpace, ProjectionConfig, polyline_at, project_to_level, segment_maxima
from geodesics.levels import Linear
from metaopt.cli import main
from metaopt.targets import load_shard, make_shard
from metaopt.targets.build import window_levels
from tests.geodesics.toys import AnalyticTask, annulus, bowl

DSS = DSSConfig(max_rounds=6, max_steps=500, keep_snapshots=False)


def shard(level: str, q: float = 0.0) -> dict:
    task = envs.make_task("quadratic", dim=4, dtype="float64").instance(3)
    return make_shard(task, 3, optimizer="adam", lr=0.1, steps=40, window=10, stride=10, slack=0.02, dss=DSS,
                      level=level, q=q)  # fmt: skip


def equally_spaced_from_start_to_end(
    targets: torch.Tensor, a: torch.Tensor, b: torch.Tensor, length: float, rel: float = 1e-9
) -> None:
    """Exactly a first and b last, T steps of arc length length / T (a chord across a corner of the path is shorter,
    so: no step longer than that, and most of them, those on straight stretches, equal to it), to ``rel``."""
    assert torch.equal(targets[0], a) and torch.equal(targets[-1], b)
    spacing = length * float((b.double() - a.double()).norm()) / (len(targets) - 1)
    steps = (targets[1:].double() - targets[:-1].double()).norm(dim=1)
    assert float(steps.max()) <= spacing * (1 + rel)
    assert float(steps.median()) == pytest.approx(spacing, rel=rel)


def test_start_on_a_convex_task_gives_the_chord() -> None:
    data = shard("start")
    for w in data["windows"]:
        assert w["connected"] and w["rule"] == "start" and w["normalized_length"] == pytest.approx(1.0, abs=1e-9)
        a, b = data["iterates"][w["t"]], data["iterates"][w["t"] + 10]
        equally_spaced_from_start_to_end(w["targets"], a, b, w["normalized_length"])


def test_between_descends_into_the_level_and_stays_certified_inside_it() -> None:
    data = shard("between", q=0.25)
    task = envs.make_task("quadratic", dim=4, dtype="float64").instance(3)
    space = ParamSpace(task)
    bent = 0
    for w in data["windows"]:
        t = w["t"]
        a, b = data["iterates"][t], data["iterates"][t + 10]
        fa, fb = space.eval_loss(a), space.eval_loss(b)
        assert w["level"] == pytest.approx(fb + 0.27 * (fa - fb))  # q + slack of the drop above the far end
        assert w["connected"] and w["descent_length"] > 0 and w["normalized_length"] > 1
        equally_spaced_from_start_to_end(w["targets"], a, b, w["normalized_length"])
        chord = segment_maxima(space, a[None], b[None])[0]
        assert chord.value > w["level"]  # the chord leaves the level set (theta_t is above it) ...
        # ... and every target point past the descent leg lies inside it (the DSS part is certified: connected)
        fraction = torch.arange(11, dtype=torch.float64) / 10
        past = fraction >= w["descent_length"] / w["normalized_length"]
        losses = space.batched_eval_loss(w["targets"][past])
        assert bool(past.sum() >= 2) and bool((losses <= w["level"]).all())
        assert space.eval_loss(w["targets"][1]) < fa  # the first step goes down
        bent += w["normalized_length"] > 1.001
    assert bent == len(data["windows"])


def test_levels_and_their_validation() -> None:
    losses = torch.tensor([4.0, 3.0, 2.0, 2.5], dtype=torch.float64)
    assert window_levels(losses, [0, 1], 1, "start", 0.0, 0.1) == pytest.approx([4.4, 3.3])
    assert window_levels(losses, [0, 1], 1, "between", 0.25, 0.0) == pytest.approx([3.25, 2.25])
    assert window_levels(losses, [2], 1, "between", 0.25, 0.0) == pytest.approx([2.5])  # the loss rose: start's rule
    with pytest.raises(ValueError, match="q \\+ slack < 1"):
        window_levels(losses, [0], 1, "between", 0.95, 0.1)


def test_the_projection_is_the_nearest_point_of_the_level_set() -> None:
    ring = ParamSpace(AnalyticTask(annulus))
    result = project_to_level(ring, torch.tensor([0.5, 0.2]), 0.01)
    radius = result.point.norm().item()  # on the inner edge of the ring, between the levels 0.95 L and L ...
    assert result.reached and 1 - 0.01**0.5 <= radius <= 1 - (0.95 * 0.01) ** 0.5 + 1e-6
    direction = torch.tensor([0.5, 0.2]) / torch.tensor([0.5, 0.2]).norm()
    torch.testing.assert_close(result.point, direction * radius, atol=1e-6, rtol=0)  # ... on the ray through theta
    ellipse = ParamSpace(AnalyticTask(bowl))
    result = project_to_level(ellipse, torch.tensor([2.0, 1.0]), 1.0, ProjectionConfig(tolerance=1e-6))
    x, y = result.point.tolist()
    assert x**2 + 4 * y**2 <= 1.0 and result.orthogonality <= 1e-5  # x - theta parallel to grad F: the KKT point
    inside = project_to_level(ellipse, torch.tensor([0.1, 0.1]), 1.0)
    assert torch.equal(inside.point, torch.tensor([0.1, 0.1])) and inside.steps == 0


def test_polyline_resampling_is_exact_at_the_ends() -> None:
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    out = polyline_at(points, torch.linspace(0.0, 1.0, 4, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [1.0, 2.0]], dtype=torch.float64))


def test_the_command_takes_the_rule_and_records_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["targets", "configs/metaopt/targets/poly_cubic.yaml", "seeds=1", "steps=40", "window=20", "stride=20",
            "level=between", "q=0.25", f"out={out}"]  # fmt: skip
    assert main(argv) == 0
    data = load_shard(next((out / "targets").glob("*.pt")))
    assert data["level"] == "between" and all(w["rule"] == "between" for w in data["windows"])
    assert "descent_length" in (out / "report.md").read_text()
    assert main(["targets", "level=sideways", f"out={tmp_path / 'bad'}"]) == 2


@cache
def descent_shard() -> dict:
    """poly_cubic, Adam lr 0.05: on the plateau near F = 0.16 the chords of windows 60 and 80 rise above the profile."""
    task = envs.make_task("poly_cubic")
    return make_shard(task, 0, optimizer="adam", lr=0.05, steps=120, window=20, stride=20, slack=0.01, dss=DSS,
                      level="descent")  # fmt: skip


def test_descent_targets_stay_under_the_profile_and_bend_where_the_chord_rises_above_it() -> None:
    data = descent_shard()
    space = ParamSpace(envs.make_task("poly_cubic"))
    fine = torch.linspace(0.0, 1.0, 401, dtype=torch.float64)
    bent = 0
    for w in data["windows"]:
        t = w["t"]
        a, b = data["iterates"][t], data["iterates"][t + 20]
        fa, fb = space.eval_loss(a), space.eval_loss(b)
        profile = Linear(fa + 0.01 * (fa - fb), fb + 0.01 * (fa - fb))
        assert w["rule"] == "descent" and w["connected"] and w["descent_length"] == 0
        assert (w["level"], w["level_end"]) == pytest.approx((profile.start, profile.end))
        equally_spaced_from_start_to_end(w["targets"], a, b, w["normalized_length"], rel=1e-5)  # float32 points
        fractions = torch.arange(21, dtype=torch.float64) / 20  # target k sits at arc-length fraction k / T
        losses = space.batched_eval_loss(w["targets"]).double()
        assert bool((losses <= profile(fractions) + 1e-9).all())
        chord = space.batched_eval_loss(torch.lerp(a[None], b[None], fine[:, None].to(a.dtype))).double()
        if float((chord - profile(fine)).max()) > 0:  # the chord leaves the profile: the path must differ from it
            assert w["num_beads"] > 2 and w["normalized_length"] > 1.001
            bent += 1
        else:
            assert w["num_beads"] == 2 and w["normalized_length"] == pytest.approx(1.0, abs=1e-9)
    assert bent >= 1


def test_descent_levels_are_linear_profiles_with_slack_times_the_drop() -> None:
    losses = torch.tensor([4.0, 3.0, 2.0, 2.5], dtype=torch.float64)
    levels = window_levels(losses, [0, 1, 2], 1, "descent", 0.0, 0.1)
    assert levels[:2] == [Linear(4.0 + 0.1, 3.0 + 0.1), Linear(3.0 + 0.1, 2.0 + 0.1)]
    assert levels[2] == pytest.approx(2.5 * 1.1)  # the loss rose: start's level of the higher end


def test_the_command_takes_descent_and_refuses_bad_slack(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    argv = ["targets", "configs/metaopt/targets/poly_cubic.yaml", "seeds=1", "steps=40", "window=20", "stride=20",
            "level=descent", f"out={out}"]  # fmt: skip
    assert main(argv) == 0
    data = load_shard(next((out / "targets").glob("*.pt")))
    assert data["level"] == "descent" and all(w["rule"] == "descent" for w in data["windows"])
    assert all(w["level_end"] < w["level"] for w in data["windows"])
    capsys.readouterr()
    for bad in ("nan", "-0.1"):
        assert main(["targets", "level=descent", f"slack={bad}", f"out={tmp_path / 'bad'}"]) == 2
        assert f"slack must be a finite number in [0, inf), got {bad}" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
