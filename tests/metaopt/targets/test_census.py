"""The census: chord checks against a dense evaluation, re-timing, inside lengths on known geometry, resumption."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from envs.task.registry import make_task
from envs.tooling.config import load_config
from geodesics import CurveConfig, DSSConfig, ParamSpace
from metaopt.commands import census as census_command
from metaopt.commands.census import INDEPENDENT_SEED, CensusConfig, run_census
from metaopt.targets.build import base_trajectory
from metaopt.targets.census import chord_barrier, inside_length, progress, retime, window_loss
from tests.geodesics.toys import HALF_CIRCLE, AnalyticTask, annulus, bowl

TINY = [
    "tasks=[{name: poly_cubic}, {name: digits_mlp}]", "optimizers=[{label: adam, name: adam}]", "seeds=2",
    "steps={poly_cubic: 60, digits_mlp: 40}", "windows=[20, 40]", "max_windows=2", "max_connects=1",
]  # fmt: skip


def test_the_chord_check_is_the_dense_maximum_along_the_chord() -> None:
    space = ParamSpace.from_task(AnalyticTask(annulus))
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([-0.6, 0.8])  # the chord passes inside the ring
    check = chord_barrier(space, a, b, level=0.05, curve=CurveConfig())
    ts = torch.linspace(0, 1, 20001, dtype=torch.float64)
    dense = max(float(annulus(torch.lerp(a.double(), b.double(), t))) for t in ts)
    assert dense <= check.peak <= dense * (1 + 1e-3) and check.level == 0.05
    assert check.blocked and check.ratio == pytest.approx(check.peak / 0.05)
    assert not chord_barrier(space, a, a * 0.99, level=0.05).blocked  # a short chord along the ring stays inside


def test_inside_length_is_one_on_a_convex_level_set_and_half_a_circle_over_the_diameter_of_a_ring() -> None:
    dss = DSSConfig(max_rounds=12, max_steps=3000)
    convex = ParamSpace.from_task(AnalyticTask(bowl))
    length, string = inside_length(convex, torch.tensor([0.9, 0.0]), torch.tensor([-0.9, 0.0]), 0.9, dss)
    assert length == 1.0 and string is None  # the chord of a convex level set never leaves it
    ring = ParamSpace.from_task(AnalyticTask(annulus))
    length, string = inside_length(ring, torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0]), 0.01, dss)
    assert string is not None and string.connected
    assert HALF_CIRCLE * 0.97 < length < HALF_CIRCLE * 1.25  # around the ring: at least pi/2 over the diameter


def test_retiming_keeps_the_path_and_its_ends_and_follows_the_optimizers_clock() -> None:
    path = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)  # a bent polyline, length 3
    own = torch.tensor([[0.0, 0.0], [0.0, 0.1], [0.0, 0.4], [0.0, 0.5], [0.0, 1.5]], dtype=torch.float64)
    clock = progress(own)
    assert clock.tolist() == pytest.approx([0.0, 0.1 / 1.5, 0.4 / 1.5, 0.5 / 1.5, 1.0]) and clock[-1] == 1.0
    constant = retime(path, torch.linspace(0, 1, 5, dtype=torch.float64))
    timed = retime(path, clock)
    for points in (constant, timed):
        assert torch.equal(points[0], path[0]) and torch.equal(points[-1], path[-1])  # the ends, exactly
        on_path = torch.minimum((points[:, 1]).abs() + (points[:, 0] - points[:, 0].clamp(0, 1)).abs(),
                                (points[:, 0] - 1).abs())  # fmt: skip
        assert float(on_path.max()) < 1e-12  # every point on one of the two legs
    arc = [float(min(p[0], 1.0) + max(p[1], 0.0)) for p in timed]  # arc length travelled along the polyline
    assert arc == pytest.approx([3 * float(c) for c in clock])  # in the optimizer's order and proportion
    still = progress(torch.zeros(4, 2))
    assert torch.equal(still, torch.linspace(0, 1, 4, dtype=torch.float64))  # no movement: constant speed


def test_window_loss_sums_the_loss_over_the_steps_after_the_first() -> None:
    space = ParamSpace.from_task(AnalyticTask(bowl))
    points = torch.tensor([[5.0, 5.0], [1.0, 0.0], [0.0, 1.0]])
    assert window_loss(space, points) == pytest.approx(1.0 + 4.0)


def test_an_interrupted_census_continues_to_the_same_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = run_census(load_config(CensusConfig, "metaopt/census/census.yaml", [*TINY, f"out={tmp_path / 'a'}"]))
    real, calls = census_command.census_unit, []

    def killed_after_one(*args: object) -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as kill -9 between two units: the first one's record is on disk
        return real(*args)  # type: ignore[arg-type]

    cfg = load_config(CensusConfig, "metaopt/census/census.yaml", [*TINY, f"out={tmp_path / 'b'}"])
    monkeypatch.setattr(census_command, "census_unit", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run_census(cfg)
    monkeypatch.setattr(census_command, "census_unit", real)
    resumed = run_census(cfg)

    def units(folder: str) -> list[dict]:
        lines = (tmp_path / folder / "records.jsonl").read_text().splitlines()
        return sorted((json.loads(line) for line in lines), key=lambda r: r["key"])

    assert units("a") == units("b") and len(units("a")) == 4
    assert whole["windows"] == resumed["windows"] and whole["table"] == resumed["table"]
    assert (tmp_path / "b" / "report.md").read_text() == (tmp_path / "a" / "report.md").read_text()
    assert (tmp_path / "b" / "plots" / "census.png").stat().st_size > 10_000
    assert all(math.isfinite(w["chord_ratio"]) for r in units("a") for w in r["windows"])


def test_on_a_straight_optimizer_path_the_retimed_chord_is_the_path_itself() -> None:
    space = ParamSpace.from_task(AnalyticTask(bowl))
    clock = torch.tensor([0.0, 0.5, 0.6, 0.9, 1.0])  # fast first, then slow: not constant speed
    own = torch.stack([torch.tensor([1.0, -1.0]) * (1 - c) + torch.tensor([-0.5, 0.5]) * c for c in clock])
    values = census_command.oracle(space, own, geodesic=torch.stack([own[0], own[-1]]))
    assert values["chord_retimed"] == pytest.approx(values["own"], rel=1e-6)
    assert values["geodesic_retimed"] == pytest.approx(values["own"], rel=1e-6)
    assert values["chord_constant"] != pytest.approx(values["own"], rel=1e-3)  # the clock matters


def test_an_independent_partner_takes_far_ends_from_another_run_at_the_same_level(tmp_path: Path) -> None:
    overrides = ["tasks=[{name: poly_cubic}]", "optimizers=[{label: adam, name: adam}]", "seeds=1",
                 "steps={poly_cubic: 200}", "windows=[50, 100]", "max_windows=3", "max_connects=0"]  # fmt: skip
    own = load_config(CensusConfig, "metaopt/census/census.yaml", [*overrides, "partner=own"])
    other = load_config(CensusConfig, "metaopt/census/census.yaml", [*overrides, "partner=independent"])
    task, optimizer = own.tasks[0], own.optimizers[0]
    mine = census_command.census_unit(own, task, optimizer, 0)["windows"]
    theirs = census_command.census_unit(other, task, optimizer, 0)["windows"]
    assert [w["end"] for w in mine] == [w["t"] + w["T"] for w in mine]
    assert [w["t"] for w in theirs] == [w["t"] for w in mine] and [w["start_loss"] for w in theirs] == [
        w["start_loss"] for w in mine
    ]
    problem = make_task("poly_cubic").instance(0)
    space = ParamSpace.from_task(problem)
    iterates, _ = base_trajectory(problem, 0 + INDEPENDENT_SEED, "adam", problem.recipe.lr, 200)
    levels = space.batched_eval_loss(iterates).double()
    for a, b in zip(mine, theirs):  # the independent run's iterate nearest the own far end's level
        assert b["end_loss"] == pytest.approx(float(levels[b["end"]]))
        assert abs(b["end_loss"] - a["end_loss"]) == pytest.approx(float((levels - a["end_loss"]).abs().min()))
    own_run, _ = base_trajectory(problem, 0, "adam", problem.recipe.lr, 200)
    last = theirs[-1]  # its chord runs from this run's theta_t to the other run's iterate
    check = chord_barrier(space, own_run[last["t"]], iterates[last["end"]], last["level"])
    assert last["chord_peak"] == pytest.approx(check.peak)
    assert any(b["chord_ratio"] > a["chord_ratio"] for a, b in zip(mine, theirs))  # another basin: higher barriers


def test_a_window_whose_string_did_not_connect_is_summarised_as_unmeasured() -> None:
    cfg = load_config(CensusConfig, "metaopt/census/census.yaml")
    window = {"T": 20, "t": 0, "level_over_final": "inf", "blocked": True, "inside_length": "nan"}
    record = census_command._numbers({"windows": [window], "final_loss": 0.0, "optimizer": "adam", "task": "x"})
    summary = census_command.summarize(cfg, [record])
    assert summary["windows"] == 1 and summary["blocked"] == 1 and summary["curved"] == 0
    [cell] = summary["table"].values()
    assert cell == {"windows": 1, "blocked": 1, "measured": 0, "curved": 0}


def test_path_efficiency_is_one_for_a_straight_run_and_falls_with_detours() -> None:
    from metaopt.targets.census import path_efficiency, path_length

    straight = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert path_length(straight) == pytest.approx(3.0) and path_efficiency(straight, 3.0) == pytest.approx(1.0)
    zigzag = torch.tensor([[0.0, 0.0], [0.0, 4.0], [3.0, 4.0], [3.0, 0.0]])  # 11 travelled for a chord of 3
    assert path_length(zigzag) == pytest.approx(11.0) and path_efficiency(zigzag, 3.0) == pytest.approx(3 / 11)
    assert path_efficiency(torch.zeros(3, 2), 0.0) == 1.0  # a run that never moved went the shortest way
