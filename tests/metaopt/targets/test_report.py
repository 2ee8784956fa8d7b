"""The targets report: lengths by training phase are the percentiles of the windows in each third of training, and the
spread plot and the TensorBoard histograms are written."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from envs.tooling.config import load_config
from metaopt.commands.targets import TargetsConfig, phase_of, run_targets, spread_by_phase

SMALL = ["seeds=2", "steps=30", "window=10", "stride=10", "device=cpu", "dss.max_rounds=4", "dss.max_steps=300"]


def test_phases_are_the_thirds_of_training() -> None:
    assert [phase_of(t, 30) for t in (0, 9, 10, 19, 20, 29)] == ["early", "early", "middle", "middle", "late", "late"]


def test_spread_by_phase_takes_the_percentiles_of_the_connected_windows_of_each_third() -> None:
    lengths = [1.0 + i / 10 for i in range(11)]  # 1.0, 1.1, ..., 2.0 in the first third: 10% is 1.1, the median 1.5
    windows = [{"t": 0, "connected": True, "normalized_length": v} for v in lengths]
    windows += [
        {"t": 25, "connected": False, "normalized_length": 9.0},
        {"t": 21, "connected": True, "normalized_length": 3.0},
    ]
    spread = spread_by_phase(windows, steps=30)
    assert set(spread) == {"early", "late"}  # a phase without windows is left out
    torch.testing.assert_close(torch.tensor(spread["early"]["normalized_length"], dtype=torch.float64),
                               torch.tensor([1.0, 1.1, 1.5, 1.9, 2.0], dtype=torch.float64))  # fmt: skip
    assert spread["late"] == {
        "windows": 2,
        "connected": 1,
        "normalized_length": [3.0] * 5,
    }  # the unconnected 9.0 is out


def test_the_report_gives_the_phases_and_writes_the_plot_and_histograms(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = load_config(TargetsConfig, "metaopt/targets/poly_cubic.yaml", [*SMALL, f"out={out}", "level=descent"])
    summary = run_targets(cfg)
    windows = [w for line in (out / "records.jsonl").read_text().splitlines()
               if (record := json.loads(line)).get("kind") == "shard" for w in record["per_window"]]  # fmt: skip
    assert sorted(summary["by_phase"]) == ["early", "late", "middle"]  # windows start at t = 0, 10, 20 of N = 30
    for phase, entry in summary["by_phase"].items():
        mine = [w for w in windows if phase_of(w["t"], cfg.steps) == phase]
        lengths = sorted(w["normalized_length"] for w in mine if w["connected"])
        assert entry["windows"] == len(mine) == 2 and entry["connected"] == len(lengths)
        if lengths:
            assert entry["normalized_length"][0] == lengths[0] and entry["normalized_length"][-1] == lengths[-1]
    assert (out / "plots" / "length_vs_step.png").stat().st_size > 10_000
    assert "| early |" in (out / "report.md").read_text()
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert "geodesic/targets/descent/normalized_length" in events.Tags()["histograms"]
