"""``geodesics connect`` end to end: trains or loads endpoints and writes every output of the run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import envs
from envs.commands.fit import FitConfig, run_fit
from envs.tooling.cli import intra_op_threads
from envs.tooling.config import load_config
from geodesics import BeadString, DSSConfig, ParamSpace, connect, train_to_threshold
from geodesics.cli import main

QUICK = ["device=cpu", "threshold=0.1", "dss.max_rounds=4"]


def test_connect_writes_string_record_tensorboard_plot_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["connect", "geodesics/connect/poly_cubic.yaml", f"out={out}", *QUICK]) == 0
    progress = capsys.readouterr().err  # endpoint training and every round say where they are
    assert "endpoint seed 0: training to evaluation loss <= 0.1" in progress
    assert "endpoint seed 1: evaluation loss" in progress and "round 1 of at most 4" in progress
    string = BeadString.load(out / "string.pt")
    record = json.loads((out / "records.jsonl").read_text().splitlines()[-1])
    assert record["kind"] == "connect" and record["num_beads"] == string.num_beads
    assert record["normalized_length"] == pytest.approx(string.normalized_length)
    assert (out / "plots" / "path_loss.png").stat().st_size > 10_000
    assert "normalized_length" in (out / "report.md").read_text()
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert {"geodesic/num_beads", "geodesic/worst_segment_max", "geodesic/normalized_length"} <= set(
        acc.Tags()["scalars"]
    )
    assert string.task["name"] == "poly_cubic" and string.config["max_rounds"] == 4


def test_the_command_gives_what_the_library_gives(tmp_path: Path) -> None:
    """``geodesics connect`` is the library call on the endpoints it trains: the same string to the last bit."""
    out = tmp_path / "run"
    assert main(["connect", "geodesics/connect/poly_cubic.yaml", f"out={out}", *QUICK]) == 0
    string = BeadString.load(out / "string.pt")
    record = json.loads((out / "records.jsonl").read_text().splitlines()[-1])
    task = envs.make_task("poly_cubic")
    config = DSSConfig(alpha=0.95, t_star="argmax", max_rounds=4, max_steps=2000)  # the YAML with the overrides
    with intra_op_threads(0):  # the command's thread count: float sums may differ in the last bit otherwise
        a, b = train_to_threshold(task, 0, 0.1), train_to_threshold(task, 1, 0.1)
        library = connect(ParamSpace(task), a, b, 0.1, config)
    assert string.config == library.config and string.num_beads > 2
    for name in ("beads", "bead_losses", "segment_max", "segment_upper", "segment_t"):
        assert torch.equal(getattr(string, name), getattr(library, name)), name
    untimed = {k: v for k, v in library.metrics().items() if k != "seconds"}
    assert {k: record[k] for k in untimed} == untimed
    for ours, theirs in zip(string.history, library.history, strict=True):
        assert torch.equal(ours.beads, theirs.beads) and ours.train_steps == theirs.train_steps


def test_connect_loads_endpoints_from_fit_checkpoints(tmp_path: Path) -> None:
    for seed in (0, 1):  # what `metaopt fit tasks/poly_cubic.yaml seed=... out=...` runs
        run_fit(load_config(FitConfig, "tasks/poly_cubic.yaml", [f"seed={seed}", f"out={tmp_path / f'fit{seed}'}",
                                                                  "device=cpu", "steps=1500"]))  # fmt: skip
    out = tmp_path / "run"
    argv = [
        f"a.checkpoint={tmp_path / 'fit0/checkpoints/final.pt'}",
        f"b.checkpoint={tmp_path / 'fit1/checkpoints/final.pt'}",
    ]
    assert main(["connect", "geodesics/connect/poly_cubic.yaml", f"out={out}", *QUICK, *argv]) == 0
    string = BeadString.load(out / "string.pt")
    saved = torch.load(tmp_path / "fit0/checkpoints/final.pt", weights_only=True)["state_dict"]
    assert torch.equal(string.beads[0], torch.cat([v.reshape(-1) for v in saved.values()]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["threshold=0.00001", "a.max_steps=50"], "above the threshold"),
        (["a.checkpoint=/nonexistent.pt"], "does not exist"),
        (["dss.finder=fancy"], "dss.finder.name must be one of the registered path finders (bezier, constrained"),
    ],
)
def test_bad_input_is_one_message(overrides: list[str], message: str, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert (
        main(["connect", "geodesics/connect/poly_cubic.yaml", f"out={tmp_path / 'r'}", "device=cpu", *overrides]) == 2
    )
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
