"""``imports:`` on every command: a user's own module registers an objective, a path finder, a task, then is named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from geodesics.cli import main as geodesics_main
from geodesics.finders.base import FINDERS
from geodesics.path import BeadString
from metaopt.cli import main as metaopt_main
from metaopt.objectives.registry import OBJECTIVES

OBJECTIVE_MODULE = '''
"""A user's objective: the L2L loss, under another name."""
from metaopt.objectives import loss_objective, register_objective

register_objective("user_loss_{tag}", loss_objective)
'''

FINDER_MODULE = '''
"""A user's path finder with its own module and options: greedy DSS with at most bead_limit beads."""
import dataclasses

from envs.errors import InvalidValue
from geodesics.finders import FinderChoice, register_finder
from geodesics.finders.greedy import connect_greedy


@dataclasses.dataclass
class Options:
    bead_limit: int = 5

    def __post_init__(self):
        if self.bead_limit < 2:
            raise InvalidValue(Options, "bead_limit", self.bead_limit, "must be at least 2")


def connect_capped(space, pairs, thresholds, losses, keys, config):
    limit = min(config.max_beads, config.options(Options).bead_limit)
    greedy = dataclasses.replace(config, finder=FinderChoice("greedy"), max_beads=limit)
    return connect_greedy(space, pairs, thresholds, losses, keys, greedy)


register_finder("user_capped_{tag}", connect_capped, config=Options, level_profiles=True)
'''


def _module(folder: Path, name: str, text: str) -> str:
    (folder / f"{name}.py").write_text(text.format(tag=name))
    return name


def test_metaopt_train_imports_a_users_objective_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])  # as a console script
    name = _module(tmp_path, "my_objective_a", OBJECTIVE_MODULE)
    out = tmp_path / "run"
    argv = ["train", "metaopt/quadratic.yaml", f"imports=[{name}]", f"objective.name=user_loss_{name}", "episodes=1",
            "steps=20", "truncation=20", "val_every=1", "val_seeds=1", "tune_seeds=1", f"out={out}"]  # fmt: skip
    try:
        assert metaopt_main(argv) == 0
        assert (out / "checkpoints" / "last.pt").is_file() and f"user_loss_{name}" in (out / "config.yaml").read_text()
    finally:
        OBJECTIVES.unregister(f"user_loss_{name}")  # the registries are global: leave them as the other tests expect


def test_geodesics_connect_imports_a_users_path_finder_with_its_own_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    name = _module(tmp_path, "my_finder_a", FINDER_MODULE)
    out = tmp_path / "run"
    argv = ["connect", "geodesics/connect/poly_cubic.yaml", f"imports=[{name}]", f"dss.finder.name=user_capped_{name}",
            "device=cpu", "threshold=0.03", "dss.max_rounds=3", f"out={out}"]  # fmt: skip
    try:
        assert geodesics_main([*argv, "dss.finder.options.bead_limit=1"]) == 2  # its own check, by its full key
        assert "dss.finder.options.bead_limit must be at least 2" in capsys.readouterr().err and not out.exists()
        assert geodesics_main([*argv, "dss.finder.options.bead_limit=3"]) == 0
        string = BeadString.load(out / "string.pt")
        assert string.num_beads <= 3 and "bead_limit: 3" in (out / "config.yaml").read_text()
        assert not string.connected and "max_beads=3" in string.reason  # poly_cubic at 0.03 needs more beads
    finally:
        FINDERS.unregister(f"user_capped_{name}")


def test_a_module_that_cannot_be_imported_is_one_message_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert metaopt_main(["train", "metaopt/quadratic.yaml", "imports=[no_such_module_here]", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert "bad value for imports: cannot import 'no_such_module_here'" in err and err.count("\n") == 1
    assert not out.exists()
