"""A path finder's own options as ``dss.finder: {name, options}``: help, older shapes, old run directories."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from envs.errors import InvalidValue
from envs.tooling.config import load_config, saved_as_today
from geodesics import ParamSpace, connect
from geodesics.cli import main
from geodesics.commands.compare_paths import ComparePathsConfig
from geodesics.commands.connect import ConnectConfig
from geodesics.finders import DSSConfig, FinderChoice, GreedyConfig, NEBConfig, TrainedCurveConfig
from geodesics.path import BeadString
from tests.geodesics.toys import AnalyticTask, annulus

QUICK = ["device=cpu", "threshold=0.1", "dss.max_rounds=2"]


def test_help_lists_the_options_of_the_finder_the_command_line_picks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["connect", "dss.finder=neb", "--help"])
    out = capsys.readouterr().out
    assert "dss.finder.options (of dss.finder.name=neb); options of path finder 'neb':" in out
    assert "  initial_images: int = 3" in out and "accept_factor" not in out.split("dss.finder.options (of")[1]
    with pytest.raises(SystemExit):
        main(["connect", "--help"])
    assert "options of path finder 'greedy':\n  accept_factor: float = 1.0" in capsys.readouterr().out


def test_a_finder_reads_only_its_own_options_and_the_shared_settings() -> None:
    config = DSSConfig.using("neb", climb=False, max_rounds=3)
    assert config.max_rounds == 3 and config.options(NEBConfig) == NEBConfig(climb=False)
    assert config.with_options(initial_images=1).options(NEBConfig) == NEBConfig(climb=False, initial_images=1)
    assert config.options(NEBConfig) == NEBConfig(climb=False)  # with_options made a copy
    assert DSSConfig(finder=FinderChoice("greedy", {"restarts": 1})).options(GreedyConfig).restarts == 1
    with pytest.raises(TypeError, match="not GreedyConfig"):
        config.options(GreedyConfig)
    with pytest.raises(InvalidValue, match=r"finder.options.stages must be an integer in \[1, inf\), got 0"):
        DSSConfig.using("constrained", stages=0)
    with pytest.raises(InvalidValue, match=r"finder.options.kappa must be a finite number in \[0, inf\)"):
        DSSConfig.using("constrained", kappa=-1.0)
    # the same finder and options give the same string, whichever way the settings were spelled
    space = ParamSpace(AnalyticTask(annulus))
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])
    spelled = DSSConfig(finder=FinderChoice("greedy", {"accept_factor": 1.0}), check_every=1)
    plain = connect(space, a, b, 0.02, DSSConfig(check_every=1))
    assert torch.equal(connect(space, a, b, 0.02, spelled).beads, plain.beads)
    assert plain.config["finder"] == {"name": "greedy", "options": GreedyConfig().__dict__}


def test_an_older_flat_config_file_reads_as_todays_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("dss:\n  method: greedy\n  finish: lbfgs\n  restarts: 2\n  spring: 0.5\n  neb: {climb: false}\n")
    new = tmp_path / "new.yaml"
    new.write_text("dss:\n  finder: {name: greedy, options: {finish: lbfgs, restarts: 2}}\n")
    assert load_config(ConnectConfig, old) == load_config(ConnectConfig, new)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "deprecated config keys, read as their new names: dss.method -> dss.finder.name, dss.finish -> "
        "dss.finder.options.finish, dss.restarts -> dss.finder.options.restarts, dss.spring -> dropped (read by "
        "constrained only), dss.neb -> dropped (read by neb only)"
    ]
    # no finder named in the file: its options belong to the one the command line names
    loose = tmp_path / "loose.yaml"
    loose.write_text("dss:\n  neb: {climb: false}\n")
    assert load_config(ConnectConfig, loose, ["dss.finder=neb"]).dss.options(NEBConfig) == NEBConfig(climb=False)


def test_compare_paths_takes_each_finders_options_and_reads_the_older_shared_ones(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("finders: [greedy, neb, bezier]\ndss:\n  trained_curve: {lr: 0.001}\n  neb: {climb: false}\n")
    cfg = load_config(ComparePathsConfig, old)
    settings = cfg.finder_settings()
    assert list(settings) == ["greedy", "neb", "bezier"]
    assert settings["bezier"].options(TrainedCurveConfig) == TrainedCurveConfig(lr=0.001)
    assert settings["neb"].options(NEBConfig) == NEBConfig(climb=False)
    assert settings["greedy"].options(GreedyConfig) == GreedyConfig()
    assert settings["bezier"].max_evaluations == cfg.dss.max_evaluations  # the shared budget
    new = tmp_path / "new.yaml"
    new.write_text("finders: [greedy, {name: neb, options: {climb: false}}, {name: bezier, options: {lr: 0.001}}]\n")
    assert load_config(ComparePathsConfig, new) == cfg
    with pytest.raises(Exception, match=r"finders\[1\].options.climb_after must be an integer"):
        load_config(ComparePathsConfig, None, ["finders=[greedy,{name: neb, options: {climb_after: -1}}]"])
    with pytest.raises(Exception, match="dss.finder is not read by compare-paths"):
        load_config(ComparePathsConfig, None, ["dss.finder=neb"])


def _flatten_saved_dss(path: Path) -> None:
    """Rewrite a run directory's saved config in the older flat shape (as runs made before the change saved it)."""
    saved = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(saved, dict)
    finder = saved["dss"].pop("finder")
    saved["dss"].update({"method": finder["name"], **finder["options"], "spring": 0.0, "kappa": 1.0, "stages": 4})
    saved["dss"]["neb"] = dict(NEBConfig().__dict__)
    saved["dss"]["trained_curve"] = dict(TrainedCurveConfig().__dict__)
    path.write_text(OmegaConf.to_yaml(saved))


def test_a_run_directory_saved_in_the_older_shape_continues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["connect", "geodesics/connect/poly_cubic.yaml", *QUICK, f"out={out}"]
    assert main(argv) == 0
    first, today = BeadString.load(out / "string.pt"), (out / "config.yaml").read_text()
    _flatten_saved_dss(out / "config.yaml")
    assert "method: greedy" in (out / "config.yaml").read_text()
    assert saved_as_today(ConnectConfig, out / "config.yaml") == today
    capsys.readouterr()
    assert main(argv) == 0  # the same settings in the older shape: the run is the same run
    assert "different config" not in capsys.readouterr().err
    assert torch.equal(BeadString.load(out / "string.pt").beads, first.beads)
    # control: a setting that changes results is still refused, and the saved config is left as it was
    saved = (out / "config.yaml").read_text()
    assert main([*argv, "dss.finder.options.accept_factor=1.5"]) == 2
    assert "differs in: dss" in capsys.readouterr().err and (out / "config.yaml").read_text() == saved
