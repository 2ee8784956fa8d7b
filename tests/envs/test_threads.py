"""The thread policy: a command runs on one intra-op thread unless threads=N says otherwise, and torch's setting is
restored afterwards; a negative count is bad input."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from envs.tooling.cli import Command, main_for
from envs.tooling.config import RunOptions


@dataclass
class Probe(RunOptions):
    """A command that only records its thread count."""


def test_commands_run_on_one_thread_by_default_and_on_n_when_asked(capsys: pytest.CaptureFixture) -> None:
    seen: list[int] = []
    commands = [Command("probe", Probe, lambda cfg: seen.append(torch.get_num_threads()), "probe")]
    before = torch.get_num_threads()
    assert main_for("x", "", commands, ["probe"]) == 0
    assert main_for("x", "", commands, ["probe", "threads=3"]) == 0
    assert seen == [1, 3] and torch.get_num_threads() == before
    assert main_for("x", "", commands, ["probe", "threads=-2"]) == 2
    assert "threads must be an integer in [0, inf), got -2" in capsys.readouterr().err
