"""The paper preset: the reference code's conventions as options beside the certified defaults.

The options at their defaults change nothing; the preset places its first bead at the chord's midpoint, always
splits the chord, and accepts what the certified check refuses (an excess between its grid's last point and t = 1, a
peak between L0 and 1.1 L0). Bad values exit 2 naming the key.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from envs.tooling.config import load_config
from geodesics import CurveConfig, DSSConfig, ParamSpace, SegmentMax, connect, segment_maxima
from geodesics.cli import main
from geodesics.commands import SweepConfig
from geodesics.finders.common import new_bead
from geodesics.finders.settings import GreedyConfig
from tests.geodesics.toys import AnalyticTask, annulus

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "geodesics" / "sweep" / "paper"


def paper_dss(task: str = "poly_quadratic") -> DSSConfig:
    """The ``dss`` section of the shipped preset."""
    return load_config(SweepConfig, PRESETS / f"{task}.yaml").dss


def test_the_new_options_at_their_defaults_give_the_certified_run_bit_for_bit() -> None:
    space = ParamSpace(AnalyticTask(annulus))
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])
    explicit = DSSConfig.using(
        "greedy", accept_factor=1.0, split_chord=False, curve=CurveConfig(include_end=True, bound=True)
    )
    implicit, spelled = connect(space, a, b, 0.02, DSSConfig()), connect(space, a, b, 0.02, explicit)
    assert torch.equal(implicit.beads, spelled.beads) and torch.equal(implicit.segment_upper, spelled.segment_upper)
    # the numbers of the run before the options existed (measured at the parent commit, same machine)
    assert implicit.num_beads == 7
    assert implicit.normalized_length == pytest.approx(1.5407636612510431, rel=1e-9)
    (chord,) = segment_maxima(space, a[None], b[None], CurveConfig())
    assert chord.value == pytest.approx(0.9999339580535889, rel=1e-9) and chord.evaluations == 128


def test_the_preset_puts_its_first_bead_at_the_chords_midpoint_even_when_the_chord_passes() -> None:
    config = paper_dss()
    assert config.t_star == "midpoint" and config.bead_noise == 0 and config.options(GreedyConfig).split_chord
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0])
    off_centre = SegmentMax(t=0.2, value=1.0, tolerance=0.0, evaluations=1)
    assert torch.equal(new_bead(a, b, off_centre, config, torch.Generator()), torch.lerp(a, b, 0.5))
    flat = ParamSpace(AnalyticTask(lambda theta: 0 * theta.sum()))  # every chord passes
    frozen = replace(config, max_steps=1, lr=1e-12, check_every=1)
    split = connect(flat, a, b, 0.1, frozen)
    assert split.connected and split.num_beads == 3 and torch.allclose(split.beads[1], torch.lerp(a, b, 0.5))
    assert connect(flat, a, b, 0.1, frozen.with_options(split_chord=False)).num_beads == 2


def spike_before_the_end(theta: torch.Tensor) -> torch.Tensor:
    """Height 2 at x = 0.995, width 0.002: above L0 = 1 only inside (0.99, 1), where the reference grid never looks."""
    return 2 * torch.exp(-(((theta[0] - 0.995) / 0.002) ** 2)) + 0 * theta[1]


def broad_bump(theta: torch.Tensor) -> torch.Tensor:
    """Height 1.05 at the midpoint: above L0 = 1 but below 1.1 L0."""
    return 1.05 * torch.exp(-(((theta[0] - 0.5) / 0.2) ** 2)) + 0 * theta[1]


@pytest.mark.parametrize("fn", [spike_before_the_end, broad_bump], ids=["excess-near-t1", "peak-below-1.1-L0"])
def test_the_paper_check_accepts_a_segment_the_certified_check_refuses(fn) -> None:
    space = ParamSpace(AnalyticTask(fn))
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    paper = replace(paper_dss().with_options(split_chord=False), max_rounds=0)
    (grid,) = segment_maxima(space, a[None], b[None], paper.curve)
    (certified,) = segment_maxima(space, a[None], b[None], CurveConfig())
    assert grid.tolerance == 0 and grid.evaluations == 100 and grid.t < 1
    assert grid.upper <= 1.1 and certified.upper > 1.0
    assert connect(space, a, b, 1.0, paper).connected
    refused = connect(space, a, b, 1.0, DSSConfig(max_rounds=0))
    assert not refused.connected and "max_rounds=0" in refused.reason


def test_the_paper_grid_never_reaches_t1_and_spaces_its_points_by_one_hundredth() -> None:
    space = ParamSpace(AnalyticTask(lambda theta: theta[0] + 0 * theta[1]))  # increasing: the max is the last point
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    (grid,) = segment_maxima(space, a[None], b[None], paper_dss("poly_cubic").curve)
    assert grid.t == pytest.approx(0.99) and grid.value == pytest.approx(0.99) and grid.upper == grid.value


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["dss.finder.options.accept_factor=0.5"],
            "dss.finder.options.accept_factor must be a finite number in [1, inf), got 0.5",
        ),
        (
            ["dss.finder.options.accept_factor=nan"],
            "dss.finder.options.accept_factor must be a finite number in [1, inf)",
        ),
        (["dss.finder=neb", "dss.finder.options.accept_factor=1.1"], "path finder 'neb' has no option accept_factor"),
        (
            ["dss.finder=bezier", "dss.finder.options.split_chord=true"],
            "path finder 'bezier' has no option split_chord; its options: bends, samples, points, lr",
        ),
        (["train_lr=-1"], "train_lr must be a finite number in [0, inf), got -1"),
        (["train_optimizer=nope"], "train_optimizer must be empty or a registered optimizer"),
        (["dss.curve.include_end=maybe"], "dss.curve.include_end"),
        (["dss.curve.bound=maybe"], "dss.curve.bound"),
    ],
)
def test_bad_values_of_the_new_options_exit_2_naming_the_key(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    quick = ["pairs=1", "thresholds=[0.3]", "train_steps=1", "dss.max_rounds=0"]  # a value let through ends fast
    assert main(["sweep", str(PRESETS / "poly_quadratic.yaml"), *quick, *argv, f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_the_presets_load_with_the_reference_conventions() -> None:
    for task in ("poly_quadratic", "poly_cubic"):
        sweep = load_config(SweepConfig, PRESETS / f"{task}.yaml")
        assert sweep.task.name == task and sweep.train_optimizer == "adam" and sweep.train_lr == 1e-3
        dss = sweep.dss
        assert (dss.optimizer, dss.lr, dss.options(GreedyConfig).accept_factor) == ("adam", 1e-3, 1.1)
        assert (dss.curve.num_points, dss.curve.include_end, dss.curve.refine_rounds, dss.curve.bound) == (
            100, False, 0, False,
        )  # fmt: skip
        assert not math.isnan(dss.alpha)
