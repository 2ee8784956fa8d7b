"""The path-finder registry: a new finder is one module and one registration line, and runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import envs
from geodesics import BeadString, DSSConfig, ParamSpace, connect, connect_many
from geodesics.cli import main
from geodesics.finders import get_finder, list_finders, register_finder
from geodesics.finders.constrained import connect_constrained
from geodesics.finders.greedy import connect_greedy
from tests.geodesics.straight import connect_straight
from tests.geodesics.toys import AnalyticTask, annulus

register_finder("straight", connect_straight)


def test_built_in_finders_are_registered_under_their_names() -> None:
    assert {"greedy", "constrained", "straight"} <= set(list_finders())
    assert get_finder("greedy") is connect_greedy and get_finder("constrained") is connect_constrained


def test_an_unknown_method_names_the_valid_choices() -> None:
    choices = r"\(bezier, constrained, greedy, neb, polychain, straight\)"
    with pytest.raises(ValueError, match=rf"registered path finders {choices}, got 'fancy'"):
        DSSConfig(finder="fancy")
    with pytest.raises(ValueError, match="got 'fancy'"):
        get_finder("fancy")


def test_a_taken_name_is_refused_and_registering_again_is_harmless() -> None:
    register_finder("straight", connect_straight)
    with pytest.raises(ValueError, match="already registered as 'greedy'"):
        register_finder("greedy", connect_straight)
    assert get_finder("greedy") is connect_greedy


def test_straight_finder_through_the_library() -> None:
    space = ParamSpace(AnalyticTask(annulus))
    a, b, c = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0]), torch.tensor([0.98, 0.199])
    across, near = connect_many(space, [(a, b), (a, c)], 0.01, DSSConfig(finder="straight"))
    assert not across.connected and across.reason.startswith("chord:")  # the chord crosses the hole
    assert near.connected and near.num_beads == 2 and near.method == "straight"
    for string, (x, y) in zip((across, near), [(a, b), (a, c)]):
        assert torch.equal(string.beads, torch.stack([x, y]))


def test_straight_finder_end_to_end_through_geodesics_connect(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["connect", "geodesics/connect/poly_cubic.yaml", "dss.finder=straight", f"out={out}", "device=cpu"]
    assert main([*argv, "threshold=0.1"]) == 0
    string = BeadString.load(out / "string.pt")
    record = json.loads((out / "records.jsonl").read_text().splitlines()[-1])
    assert string.method == "straight" and string.config["finder"]["name"] == "straight"
    assert string.num_beads == record["num_beads"] == 2
    assert string.connected == record["connected"] == bool(string.segment_upper[0] <= 0.1)
    # the run holds what the library gives for the same endpoints
    again = connect(ParamSpace(envs.make_task("poly_cubic")), string.beads[0], string.beads[-1], 0.1,
                    DSSConfig(finder="straight"))  # fmt: skip
    assert torch.equal(again.segment_upper, string.segment_upper) and again.reason == string.reason
    assert record["linear_barrier"] == pytest.approx(string.linear_barrier)
    assert (out / "plots" / "path_loss.png").is_file()
