"""Sweeps, plots and the disconnection check, end to end on small settings."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import envs
from geodesics import BeadString, ParamSpace
from geodesics.cli import main
from geodesics.commands.sweep import SweepConfig, _report, aggregate, run_sweep

SMALL = ["device=cpu", "pairs=2", "concurrent=2", "thresholds=[0.2,0.1]", "dss.max_rounds=4"]


def run(out: Path, *extra: str) -> None:
    assert main(["sweep", "geodesics/sweep/poly_cubic.yaml", f"out={out}", *SMALL, *extra]) == 0


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "run"
    run(out)
    return out


def test_small_sweep_writes_every_output(sweep_dir: Path) -> None:
    for name in ("config.yaml", "records.jsonl", "results.csv", "pairs.csv", "report.md", "plots/sweep.png"):
        assert (sweep_dir / name).is_file(), name
    rows = list(csv.DictReader((sweep_dir / "results.csv").open()))
    assert [float(r["threshold"]) for r in rows] == [0.2, 0.1]
    assert all(int(r["pairs"]) == 2 for r in rows)
    assert len(list((sweep_dir / "strings").glob("*.pt"))) == sum(int(r["trained"]) for r in rows)
    assert list((sweep_dir / "tb").iterdir())
    assert "| L0 |" in (sweep_dir / "report.md").read_text()


def test_pairs_are_trained_below_their_threshold_from_fresh_seeds(sweep_dir: Path) -> None:
    space = ParamSpace(envs.make_task("poly_cubic"))
    seeds = []
    for row in csv.DictReader((sweep_dir / "pairs.csv").open()):
        if row["string"]:
            string = BeadString.load(sweep_dir / row["string"])
            ends = space.batched_eval_loss(torch.stack([string.beads[0], string.beads[-1]]))
            assert float(ends.max()) <= float(row["threshold"])
        seeds.append(row["seeds"])
    assert len(set(seeds)) == len(seeds) == 4


def test_resumed_sweep_equals_uninterrupted(sweep_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"

    class Killed(Exception):
        pass

    def kill(*_: object) -> None:
        raise Killed

    from envs.tooling.cli import intra_op_threads
    from envs.tooling.config import load_config

    cfg = load_config(SweepConfig, "geodesics/sweep/poly_cubic.yaml", [f"out={out}", *SMALL])
    with pytest.raises(Killed), intra_op_threads(cfg.threads):  # the command's threads: sums round by their count
        run_sweep(cfg, on_group=kill)  # dies after the first group (threshold 0.2)
    assert len([line for line in (out / "records.jsonl").read_text().splitlines() if line]) == 2
    run(out)  # the same command continues
    for name in ("results.csv", "pairs.csv"):
        resumed = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader((out / name).open())]
        whole = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader((sweep_dir / name).open())]
        assert resumed == whole, name


def test_aggregate_statistics() -> None:
    records = [
        {"threshold": 0.1, "trained": True, "connected": True, "normalized_length": 1.0, "num_beads": 2,
         "max_loss": 0.05, "group_seconds": 2.0, "group_size": 2},
        {"threshold": 0.1, "trained": True, "connected": True, "normalized_length": 2.0, "num_beads": 4,
         "max_loss": 0.07, "group_seconds": 2.0, "group_size": 2},
        {"threshold": 0.1, "trained": True, "connected": False, "normalized_length": 9.0, "num_beads": 9,
         "max_loss": 0.9, "group_seconds": 1.0, "group_size": 1},
        {"threshold": 0.1, "trained": False, "connected": False, "group_seconds": 1.0, "group_size": 1},
    ]  # fmt: skip
    (row,) = aggregate(records)
    assert row["pairs"] == 4 and row["trained"] == 3 and row["connected"] == 2
    assert row["share_connected"] == pytest.approx(2 / 3)
    assert row["normalized_length_mean"] == pytest.approx(1.5) and row["normalized_length_se"] == pytest.approx(0.5)
    assert row["num_beads_mean"] == pytest.approx(3.0) and row["num_beads_se"] == pytest.approx(1.0)


def test_a_level_no_pair_reached_is_reported_without_made_up_statistics() -> None:
    records = [{"threshold": 0.05, "trained": False, "connected": False, "group_seconds": 1.0, "group_size": 2}] * 2
    report = _report("digits_mlp", aggregate(records), 2.0)
    row = next(line for line in report.splitlines() if line.startswith("| 0.05 |"))
    assert row == "| 0.05 | 0/2 | 0 | – | – | – | 1.0 |" and "nan" not in report
    assert "Pairs not trained" in report


def test_plot_writes_pca_and_snapshot_figures(sweep_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(sweep_dir)]) == 0
    figures = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if line.startswith("figure:")]
    names = {Path(f).name.split("-", 2)[-1] for f in figures}
    assert {"pca2d.png", "pca3d.png", "snapshots.png", "path_loss.png"} <= names
    assert all(Path(f).stat().st_size > 5_000 for f in figures)


def test_permuted_pair_is_disconnected_and_the_control_connects(tmp_path: Path) -> None:
    from envs.tasks.permutation import swap_hidden_units

    out = tmp_path / "run"
    argv = ["disconnection", "geodesics/disconnection.yaml", f"out={out}", "dss.max_rounds=3", "dss.max_steps=500"]
    assert main(argv) == 0
    permuted = BeadString.load(out / "strings" / "permuted.pt")
    control = BeadString.load(out / "strings" / "control.pt")
    assert not permuted.connected and permuted.reason
    assert control.connected
    assert (out / "plots" / "permuted_snapshots.png").is_file()
    task = envs.make_task("permutation")
    space = ParamSpace(task)
    model = space.to_model(permuted.beads[0])
    x, _ = task.data()
    before = model(x).detach().clone()
    assert torch.allclose(swap_hidden_units(model)(x), before, atol=1e-6)  # same function ...
    assert torch.equal(space.flatten(model), permuted.beads[-1])  # ... and it is the other endpoint
    losses = space.batched_eval_loss(torch.stack([permuted.beads[0], permuted.beads[-1]]))
    assert abs(float(losses[0] - losses[1])) < 1e-6
