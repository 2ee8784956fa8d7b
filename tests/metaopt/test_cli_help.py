"""Every ``key=value`` that ``metaopt COMMAND --help`` shows loads with that command's schema."""

from __future__ import annotations

import re

import pytest

from envs.tooling.config import load_config
from metaopt.cli import COMMANDS, EXAMPLES, main

BY_NAME = {command.name: command for command in COMMANDS}
ASSIGNMENT = re.compile(r"(?<![\w.=`])([A-Za-z_][\w.]*)=(\[[^\]\s]*\]|\{[^}]*\}|[^\s,;)`]+)")
"""A ``key=value`` token of a help text (``out=`` or ``out=``...``: a key named in prose, not an example)."""
PLACEHOLDERS = re.compile(r"^(value|\.\.\.|<.*>|[A-Z_]+)$")


def help_text(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return capsys.readouterr().out


def shown_assignments(text: str) -> list[str]:
    """The ``key=value`` examples of a help text: placeholders (``key=value``, ``resume=RUN``) aside."""
    return [f"{key}={value}" for key, value in ASSIGNMENT.findall(text) if not PLACEHOLDERS.match(value)]


def test_the_token_pattern_finds_examples_and_skips_prose() -> None:
    text = "e.g. episodes=50 tasks.x.steps=3 optimizers=[sgd,adam]; ``out=`` or out= resumes; key=value, resume=RUN"
    assert shown_assignments(text) == ["episodes=50", "tasks.x.steps=3", "optimizers=[sgd,adam]"]


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_each_command_example_loads_with_its_schema(command: str) -> None:
    spec = BY_NAME[command]
    overrides = EXAMPLES[command].split()
    load_config(spec.schema, spec.default_config, overrides)


@pytest.mark.parametrize("command", sorted(BY_NAME))
def test_every_assignment_in_the_help_loads_with_the_commands_schema(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = BY_NAME[command]
    text = help_text(command, capsys)
    shown = shown_assignments(text)
    if EXAMPLES[command]:
        assert EXAMPLES[command] in " ".join(text.split())  # argparse wraps the line
    for assignment in shown:
        load_config(spec.schema, spec.default_config, [assignment])  # a ConfigError names the key that is not there
