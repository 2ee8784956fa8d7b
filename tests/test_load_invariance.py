"""Budgets count evaluations, so a loaded machine gives the same results as an idle one, bit for bit.

A machine so loaded that every call to the clock finds an hour gone is simulated by a clock that jumps an hour per
call (``time.perf_counter``, ``time.monotonic`` and ``time.time``). The shipped configs' path finders, meta-training
and the comparison then give the same strings, checkpoints and tables as under the real clock; only the recorded
seconds differ. The control: a wall-clock limit, opted into, does cut the run short under the same clock, and the
report says so; so the test would see a budget that counts seconds.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from envs.tooling.config import load_config
from geodesics import BeadString
from geodesics.cli import main as geodesics_main
from metaopt.commands import run_compare, run_train
from metaopt.compare import CompareConfig, CompareTaskConfig
from metaopt.training import TrainConfig
from tests.metaopt.sizes import TINY_TRAIN

HOUR = 3600.0


class LoadedClock:
    """A clock on which every reading of the main thread is an hour after the last one.

    Other threads (TensorBoard's writer flushes on a timer) read the real clock: they would spin otherwise.
    """

    def __init__(self, real: Callable[[], float]) -> None:
        self.real = real
        self.now = real()

    def __call__(self) -> float:
        if threading.current_thread() is not threading.main_thread():
            return self.real()
        self.now += HOUR
        return self.now


def load_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every clock reading finds another hour gone."""
    for name in ("perf_counter", "monotonic", "time"):
        monkeypatch.setattr(time, name, LoadedClock(getattr(time, name)))


def _untimed(value: Any) -> Any:
    """``value`` without the keys that hold measured times."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if "second" not in k and "time" not in k and k != "eta"}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


# -- path finders: the shipped compare-paths config, every finder -------------------------------------------------

PATHS = ["geodesics/compare_paths/poly_cubic.yaml", "device=cpu", "task.name=permutation", "threshold=0.01",
         "pairs=1", "seed=1", "align=weight_matching", "dss.max_rounds=2", "dss.max_steps=100",
         "dss.max_evaluations=4000"]  # fmt: skip


def _paths(out: Path, *extra: str) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    assert geodesics_main(["compare-paths", *PATHS, f"out={out}", *extra]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    strings = [r["string"] for r in records if r.get("string")]
    beads = {name: BeadString.load(out / name).beads.numpy().tobytes() for name in strings}
    return _untimed(records), beads


def test_path_finders_give_the_same_strings_on_a_loaded_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = _paths(tmp_path / "idle")
    load_the_machine(monkeypatch)
    busy = _paths(tmp_path / "loaded")
    assert busy[0] == idle[0] and busy[1] == idle[1]
    assert any(r["connected"] for r in idle[0])


def test_a_wall_clock_limit_opted_into_cuts_the_run_and_the_report_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_the_machine(monkeypatch)
    out = tmp_path / "limited"
    assert geodesics_main(["compare-paths", *PATHS, f"out={out}", "dss.max_seconds=60", "finders=[greedy]"]) == 0
    [record] = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert not record["connected"] and record["reason"].startswith("time: the 60 s budget ran out")
    report = (out / "report.md").read_text()
    assert "cut short by the wall-clock limit" in report


# -- meta-training and the comparison -------------------------------------------------------------------------------


def _train(out: Path) -> dict[str, Any]:
    cfg = load_config(TrainConfig, "metaopt/quadratic.yaml", [*TINY_TRAIN, "episodes=2", "seed=3", f"out={out}"])
    summary = run_train(cfg)
    checkpoint = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    weights = {k: v.numpy().tobytes() for k, v in checkpoint["state_dict"].items()}
    summary = {k: v for k, v in _untimed(summary).items() if k != "run_dir"}
    return {"summary": summary, "weights": weights}


def test_meta_training_gives_the_same_checkpoint_on_a_loaded_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = _train(tmp_path / "idle")
    load_the_machine(monkeypatch)
    busy = _train(tmp_path / "loaded")
    assert busy["weights"] == idle["weights"] and busy["summary"] == idle["summary"]


def _compare(out: Path) -> list[dict[str, str]]:
    cfg = CompareConfig(
        tasks={"quad": CompareTaskConfig(name="quadratic", options={"dim": 3}, steps=8)},
        optimizers=["sgd", "adam"], reference="adam", lr_grid=[0.01, 0.1], tuning_seeds=2, eval_seeds=3,
        final_window=2, timing=False, device="cpu", out=str(out),
    )  # fmt: skip
    run_compare(cfg, progress=False)
    return list(csv.DictReader((out / "results.csv").open()))


def test_the_comparison_gives_the_same_table_on_a_loaded_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = _compare(tmp_path / "idle")
    load_the_machine(monkeypatch)
    assert _compare(tmp_path / "loaded") == idle
