"""``scripts/operating_points.py``: the (training, evaluation) loss points of comparison runs, and dominance."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from metaopt.compare import CompareConfig, CompareTaskConfig, compute_results
from metaopt.compare.outputs import write_outputs

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "operating_points.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("operating_points", SCRIPT)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _run(out: Path, lr: float) -> Path:
    task = CompareTaskConfig(name="tabular_mlp", options={"dataset": "iris", "width": 8, "depth": 1}, steps=30)
    cfg = CompareConfig(tasks={"iris": task}, optimizers=["adam", "sgd"], lr_grid=[lr], tuning_seeds=1, eval_seeds=3,
                        final_window=4, timing=False, device="cpu", out=str(out))  # fmt: skip
    run, tasks = compute_results(cfg, progress=False)
    write_outputs(run, cfg, tasks)
    return run.path


def test_points_are_the_reports_means_one_per_rate_and_dominance_is_on_both_losses(tmp_path: Path) -> None:
    module = _script()
    runs = [_run(tmp_path / f"lr{lr}", lr) for lr in (0.01, 0.1)]
    points = module.operating_points(runs)["iris"]
    assert set(points) == {("adam", 0.01), ("adam", 0.1), ("sgd", 0.01), ("sgd", 0.1)}
    for run, lr in zip(runs, (0.01, 0.1)):
        with open(run / "results.csv") as handle:
            for row in csv.DictReader(handle):
                train, evaluation, n = points[(row["optimizer"], lr)]
                assert train == pytest.approx(float(row["final_loss_mean"]), rel=1e-9)
                assert evaluation == pytest.approx(float(row["eval_loss_mean"]), rel=1e-9)
                assert n == 3
    reference = {0.01: (0.5, 0.3, 3), 0.1: (0.1, 0.4, 3)}
    assert module.dominating((0.2, 0.35, 3), reference) == []  # better than each rate on one of the two
    assert module.dominating((0.6, 0.3, 3), reference) == [0.01]  # ties count as at least as good
    assert module.dominating((0.6, 0.5, 3), reference) == [0.01, 0.1]
    figure = tmp_path / "points.png"
    assert module.main([str(r) for r in runs] + ["--figure", str(figure)]) == 0
    assert figure.stat().st_size > 10_000
