"""A missing local dataset: the message names the key that works where the user is, and that key works."""

from __future__ import annotations

from pathlib import Path

import pytest

import envs
from envs.commands.fit import FitConfig
from envs.tooling.config import load_config


def test_missing_mnist_names_the_task_option_every_entry_point_takes(tmp_path: Path) -> None:
    with pytest.raises(envs.DataNotFoundError) as info:
        envs.make_task("mnist_mlp", data_dir=str(tmp_path)).load()
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path) in message
    assert "task.options.data_dir=PATH" in message and "Nothing is downloaded" in message
    # the key the message gives for the command line is one `metaopt fit` accepts
    cfg = load_config(FitConfig, None, ["task.name=mnist_mlp", f"task.options.data_dir={tmp_path}"])
    assert cfg.task.options["data_dir"] == str(tmp_path)


def test_fit_command_reports_missing_data_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from metaopt.cli import main

    code = main(["fit", "configs/tasks/mnist_mlp.yaml", f"task.options.data_dir={tmp_path}", f"out={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and "MNIST" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # nothing written
