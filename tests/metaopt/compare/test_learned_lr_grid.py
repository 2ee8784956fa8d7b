"""Tuned learned arms (``learned_lr_grid``): the step multiplier tuned per task like a baseline's learning rate."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from envs.tooling.config import load_config, to_yaml
from envs.tooling.runs import Run
from metaopt.cli import main
from metaopt.commands import run_compare
from metaopt.compare import CompareConfig
from metaopt.compare.stats import final_loss

SUITE = Path(__file__).resolve().parents[3] / "configs" / "compare" / "heldout_suite.yaml"
SMOKE = ["tuning_seeds=2", "eval_seeds=3", "final_window=3", "timing=false", "lr_grid=[0.003,0.03]",
         "optimizers=[adam]", "learned=[family-v1]"]  # fmt: skip
OUTPUTS = ("report.md", "results.csv", "tuning.csv", "curves.csv")


def smoke(out: Path, *overrides: str, tasks: Sequence[str] = ("iris", "wine")) -> CompareConfig:
    """The held-out suite at smoke size (the sizes at the top of the config): two tables, 15 steps."""
    cfg = load_config(CompareConfig, SUITE, [*SMOKE, *overrides])
    shrunk = {label: dataclasses.replace(cfg.tasks[label], steps=15) for label in tasks}
    return dataclasses.replace(cfg, tasks=shrunk, out=str(out))


def units(run_dir: Path) -> dict[tuple[Any, ...], Mapping[str, Any]]:
    return {(r["phase"], r["task"], r["optimizer"], r["lr"], r["seed"]): r for r in Run(run_dir).records("unit")}


@pytest.fixture(scope="module")
def untuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CompareConfig, list]:
    cfg = smoke(tmp_path_factory.mktemp("untuned") / "run")
    out = run_compare(cfg, progress=False, tables=False)
    return Path(out["run_dir"]), cfg, out["tasks"]


@pytest.fixture(scope="module")
def one_point(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CompareConfig, list]:
    cfg = smoke(tmp_path_factory.mktemp("one") / "run", "learned_lr_grid=[1.0]")
    out = run_compare(cfg, progress=False, tables=False)
    return Path(out["run_dir"]), cfg, out["tasks"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CompareConfig, list]:
    cfg = smoke(tmp_path_factory.mktemp("grid") / "run", "learned_lr_grid=[0.3,1.0,3.0,1000.0]")
    out = run_compare(cfg, progress=False, tables=False)
    return Path(out["run_dir"]), cfg, out["tasks"]


def test_a_one_point_grid_at_one_gives_the_untuned_arms_evaluation_exactly(one_point: tuple) -> None:
    run_dir, cfg, tasks = one_point
    assert cfg.optimizers == ["adam", "family-v1", "family-v1-tuned"]
    records = units(run_dir)
    for task in tasks:
        rows = {row.optimizer: row for row in task.optimizers}
        plain, tuned = rows["family-v1"], rows["family-v1-tuned"]
        assert plain.tuning is None and plain.lr is None
        assert tuned.tuning is not None and tuned.lr == 1.0 and tuned.tuning.lrs == (1.0,)
        assert tuned.path == plain.path == "plain"  # learned arms keep the plain loop
        np.testing.assert_array_equal(tuned.curves, plain.curves)
        np.testing.assert_array_equal(tuned.finals, plain.finals)
        np.testing.assert_array_equal(tuned.eval_by_seed, plain.eval_by_seed)
        assert tuned.paired == plain.paired and tuned.paired_eval == plain.paired_eval
        for seed in cfg.eval_seed_list:
            a = records[("eval", task.label, "family-v1", None, seed)]
            b = records[("eval", task.label, "family-v1-tuned", 1.0, seed)]
            assert (a["losses"], a["eval_loss"], a["diverged"]) == (b["losses"], b["eval_loss"], b["diverged"])
    report = (run_dir / "report.md").read_text()
    assert "| family-v1-tuned | ×1 |" in report and "Tuning of the learned arms' step multiplier" in report


def test_the_chosen_multiplier_has_the_lowest_tuning_criterion_of_the_recorded_runs(grid: tuple) -> None:
    run_dir, cfg, tasks = grid
    records = units(run_dir)
    tuned_keys = [k for k in records if k[0] == "tune" and k[2] == "family-v1-tuned"]
    adam_seeds = {k[4] for k in records if k[0] == "tune" and k[2] == "adam"}
    assert {k[3] for k in tuned_keys} == set(cfg.learned_lr_grid)  # the multipliers, not lr_grid
    assert {k[4] for k in tuned_keys} == adam_seeds == set(cfg.tuning_seed_list)  # the baselines' tuning seeds
    assert not any(k[2] == "family-v1" for k in records if k[0] == "tune")  # the untuned arm is not tuned
    tuning_csv = (run_dir / "tuning.csv").read_text().splitlines()
    chosen_somewhere_else = False
    for task in tasks:
        scores = {}
        for m in cfg.learned_lr_grid:
            runs = [records[("tune", task.label, "family-v1-tuned", m, s)] for s in cfg.tuning_seed_list]
            if any(r["diverged"] for r in runs):
                continue  # never chosen
            scores[m] = float(np.mean([final_loss([float(v) for v in r["losses"]], cfg.final_window) for r in runs]))
        expected = min(scores, key=scores.__getitem__)
        row = {r.optimizer: r for r in task.optimizers}["family-v1-tuned"]
        assert row.tuning is not None and row.lr == expected
        assert row.tuning.scores[row.tuning.lrs.index(expected)] == pytest.approx(scores[expected], rel=1e-12)
        chosen_somewhere_else |= expected != 1.0
        assert f"{task.label},family-v1-tuned,{expected!r}," in "\n".join(tuning_csv)
        assert {r["lr"] for r in records.values() if r["phase"] == "eval" and r["task"] == task.label
                and r["optimizer"] == "family-v1-tuned"} == {expected}  # fmt: skip
        assert row.seeds == cfg.eval_seeds and row.paired is not None and row.paired.difference.n > 0
    assert chosen_somewhere_else  # the grid matters on these tasks (else the test could not tell)
    text = (run_dir / "report.md").read_text()
    assert "| learned arm | ×0.3 | ×1 | ×3 | ×1e+03 |" in text
    csv_rows = [line.split(",") for line in (run_dir / "results.csv").read_text().splitlines()]
    lr_col, opt_col = csv_rows[0].index("lr"), csv_rows[0].index("optimizer")
    assert {float(r[lr_col]) for r in csv_rows[1:] if r[opt_col] == "family-v1-tuned"} <= set(cfg.learned_lr_grid)


def test_an_empty_grid_adds_no_arm_and_changes_nothing_else(untuned: tuple, one_point: tuple) -> None:
    run_dir, cfg, _ = untuned
    assert cfg.learned_lr_grid == [] and cfg.tuned_learned == []
    assert cfg.optimizers == ["adam", "family-v1"] and "family-v1-tuned" not in cfg.aliases
    assert cfg == smoke(Path(cfg.out), "learned_lr_grid=[]")  # type: ignore[arg-type]
    report = (run_dir / "report.md").read_text()
    assert "-tuned" not in report and "multiplier" not in report
    assert all(not k[2].endswith("-tuned") for k in units(run_dir))
    # the arms both runs have got the same records, digit for digit: the tuned arm only adds
    with_grid = units(one_point[0])
    for key, record in units(run_dir).items():
        assert {k: v for k, v in record.items() if k != "path"} == {
            k: v for k, v in with_grid[key].items() if k != "path"
        }


def test_a_saved_config_with_tuned_arms_reloads_unchanged(tmp_path: Path) -> None:
    cfg = load_config(CompareConfig, SUITE, ["learned=[family-v1,family-mlp-v0]", "learned_lr_grid=[0.5,2]"])
    assert cfg.optimizers[-4:] == ["family-v1", "family-v1-tuned", "family-mlp-v0", "family-mlp-v0-tuned"]
    assert cfg.optimizer_options["family-v1-tuned"] == {"checkpoint": "family-v1"}
    assert cfg.grid_of("family-v1-tuned") == [0.5, 2] and cfg.grid_of("adam") == cfg.lr_grid
    assert cfg.grid_of("family-v1") == cfg.lr_grid  # the untuned arm has no grid of its own (and is not tuned)
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg))
    again = load_config(CompareConfig, saved)
    assert again.optimizers == cfg.optimizers and again.aliases == cfg.aliases
    assert again.optimizer_options == cfg.optimizer_options and again.tuned_learned == cfg.tuned_learned
    with pytest.raises(ValueError, match="already among optimizers"):
        CompareConfig(tasks={}, optimizers=["adam", "family-v1-tuned"], learned=["family-v1"], learned_lr_grid=[1.0])


@pytest.mark.parametrize("bad", ["[0.5,-1]", "[0]", "[nan]", "[1,inf]"])
def test_a_bad_multiplier_is_one_message_naming_the_key_and_writes_nothing(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["compare", str(SUITE), f"out={out}", "learned=[family-v1]", f"learned_lr_grid={bad}"]) == 2
    err = capsys.readouterr().err
    assert "learned_lr_grid must be" in err and "(0, inf)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(ValueError, match=r"learned_lr_grid must be .* in \(0, inf\)"):
        CompareConfig(learned=["family-v1"], learned_lr_grid=[1.0, -float("inf") if "inf" in bad else math.nan])


def test_a_resumed_run_with_tuned_arms_equals_an_uninterrupted_one(
    grid: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uninterrupted, done, _ = grid
    cfg = dataclasses.replace(done, out=str(tmp_path / "resumed"))
    original = Run.append_records
    calls = 0

    def crash_in_the_tuned_arms_tuning(self: Run, records: Sequence[Mapping[str, Any]]) -> None:
        nonlocal calls
        if any(r.get("optimizer") == "family-v1-tuned" for r in records):
            calls += 1
            if calls == 5:  # one run per chunk on the plain loop: the fifth tuned unit
                with open(self.records_path, "a") as f:
                    f.write('{"kind": "unit", "phase": "tu')  # torn line
                raise KeyboardInterrupt
        original(self, records)

    monkeypatch.setattr(Run, "append_records", crash_in_the_tuned_arms_tuning)
    with pytest.raises(KeyboardInterrupt):
        run_compare(cfg, progress=False, tables=False)
    monkeypatch.setattr(Run, "append_records", original)
    partial = units(Path(cfg.out))  # type: ignore[arg-type]
    assert sum(k[2] == "family-v1-tuned" for k in partial) == 4

    again = load_config(CompareConfig, Path(cfg.out) / "config.yaml")  # resumed from the saved config  # type: ignore[arg-type]
    run_compare(again, progress=False, tables=False)
    resumed = Path(cfg.out)  # type: ignore[arg-type]
    for name in OUTPUTS:
        assert (resumed / name).read_text() == (uninterrupted / name).read_text(), name
    assert len(Run(resumed).records("unit")) == len(units(resumed)) == len(units(uninterrupted))
