"""``tune_on``: baselines tuned on the final training loss (the default) or on the evaluation loss."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from envs.tooling.runs import Run
from metaopt.cli import main
from metaopt.compare import CompareConfig, CompareTaskConfig, compute_results
from metaopt.compare.outputs import write_outputs

GRID = [0.003, 0.03, 0.3]


def iris(out: Path, tune_on: str) -> CompareConfig:
    """Adam on a small iris MLP: the largest rate fits the training set best, a middle one generalises best."""
    task = CompareTaskConfig(
        name="tabular_mlp",
        options={"dataset": "iris", "width": 16, "depth": 1, "activation": "relu"},
        steps=60,
        held_out=True,
    )
    return CompareConfig(tasks={"iris": task}, optimizers=["adam"], lr_grid=GRID, tuning_seeds=2, eval_seeds=2,
                         final_window=3, timing=False, device="cpu", out=str(out), tune_on=tune_on)  # fmt: skip


def tuning_means(run: Run, window: int) -> dict[str, list[float]]:
    """From the records alone: mean final training loss and mean evaluation loss over the tuning seeds, per rate."""
    finals: dict[float, list[float]] = {lr: [] for lr in GRID}
    evals: dict[float, list[float]] = {lr: [] for lr in GRID}
    for record in run.records("unit"):
        if record["phase"] == "tune":
            finals[record["lr"]].append(float(np.mean([float(v) for v in record["losses"][-window:]])))
            evals[record["lr"]].append(float(record["eval_loss"]))
    return {"train": [float(np.mean(finals[lr])) for lr in GRID], "eval": [float(np.mean(evals[lr])) for lr in GRID]}


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("tune_on")
    results = {}
    for tune_on in ("train", "eval"):
        cfg = iris(out / tune_on, tune_on)
        run, tasks = compute_results(cfg, progress=False)
        write_outputs(run, cfg, tasks)
        results[tune_on] = (cfg, run, tasks[0].optimizers[0])
    return results


def test_each_choice_minimises_its_own_score_over_the_tuning_runs(both: dict[str, Any]) -> None:
    chosen = {}
    for tune_on, (cfg, run, adam) in both.items():
        means = tuning_means(run, cfg.final_window)[tune_on]
        assert adam.tuning.scores == pytest.approx(means, rel=1e-9)
        chosen[tune_on] = adam.tuning.chosen
        assert chosen[tune_on] == GRID[int(np.argmin(means))]
        # the evaluation runs use the chosen rate, on the evaluation seeds only
        evaluated = {(r["lr"], r["seed"]) for r in run.records("unit") if r["phase"] == "eval"}
        assert evaluated == {(chosen[tune_on], seed) for seed in cfg.eval_seed_list}
    assert chosen == {"train": 0.3, "eval": 0.03}  # the two criteria disagree here, so the test can tell them apart


def test_the_tuning_records_are_the_same_whatever_the_criterion(both: dict[str, Any]) -> None:
    (_, train_run, _), (_, eval_run, _) = both["train"], both["eval"]
    first = {(r["lr"], r["seed"]): r["losses"] for r in train_run.records("unit") if r["phase"] == "tune"}
    second = {(r["lr"], r["seed"]): r["losses"] for r in eval_run.records("unit") if r["phase"] == "tune"}
    assert first == second


def test_the_report_and_tuning_csv_say_what_was_minimised(both: dict[str, Any]) -> None:
    for tune_on, phrase, column in (
        ("train", "the lowest mean final training loss", "mean_final_loss"),
        ("eval", "the lowest mean evaluation loss (of the final weights)", "mean_eval_loss"),
    ):
        cfg, run, adam = both[tune_on]
        report = (run.path / "report.md").read_text()
        assert phrase in report
        assert ("`tune_on: eval`" in report) == (tune_on == "eval")
        with open(run.path / "tuning.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert [float(row[column]) for row in rows] == pytest.approx(list(adam.tuning.scores))
        assert [row["chosen"] == "True" for row in rows] == [lr == adam.tuning.chosen for lr in GRID]
        assert all(math.isfinite(float(row[column])) for row in rows)


def test_an_unknown_criterion_is_refused_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["compare", "compare/quadratic.yaml", f"out={out}", "tune_on=test"]) == 2
    err = capsys.readouterr().err
    assert "tune_on must be one of train, eval, got 'test'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
