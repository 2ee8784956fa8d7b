"""The command line: help lists every option, fit writes a run directory, bad input exits 2 with one message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaopt.cli import main


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    for key in ("task.name", "task.options", "optimizer", "lr", "steps", "seed", "device", "out"):
        assert f"{key} = " in out


def test_fit_writes_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["fit", "tasks/quadratic.yaml", f"out={out}", "steps=20", "device=cpu"]) == 0
    printed = capsys.readouterr().out.splitlines()  # where to look comes first, so TensorBoard can follow the run
    assert printed[:2] == [f"run directory: {out}", f"tensorboard --logdir {out / 'tb'}"]
    for name in ("config.yaml", "report.md", "records.jsonl", "checkpoints/final.pt"):
        assert (out / name).is_file()
    record = json.loads((out / "records.jsonl").read_text().splitlines()[0])
    assert record["steps"] == 20 and record["eval_loss"] < record["initial_loss"]
    assert list((out / "tb").iterdir())


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["fit", "tasks/quadratic.yaml", "sed=1"], "bad config at 'sed'"),
        (["fit", "tasks/quadratic.yaml", "task.name=nope"], "unknown task 'nope'"),
        (["fit", "nope.yaml"], "config file 'nope.yaml' not found"),
        (["fit", "tasks/mnist_mlp.yaml", "task.options.data_dir=/nonexistent"], "MNIST files not found"),
    ],
)
def test_bad_input_exits_2_with_one_message(
    argv: list[str], match: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written for bad input
