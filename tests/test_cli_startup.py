"""Start-up stays light: ``metaopt --help`` and ``geodesics --help`` list their commands without importing torch,
and the lazy package ``__init__`` files keep every public name and every registration.

Each check runs in a fresh interpreter: this one has imported everything long ago.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys

import pytest

import envs
import geodesics
import metaopt

METAOPT_COMMANDS = ["tasks", "fit", "train", "compare", "targets", "quickstart"]
GEODESICS_COMMANDS = ["connect", "sweep", "compare-paths", "plot", "disconnection"]


def fresh(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a new interpreter; its last line of output is a JSON report."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def report(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


CLI_SCRIPT = """
import contextlib, io, json, sys
from {package}.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        status = main({argv!r})
    except SystemExit as exc:
        status = exc.code
print(json.dumps({{"status": status, "out": out.getvalue(), "err": err.getvalue(), "torch": "torch" in sys.modules}}))
"""


@pytest.mark.parametrize(("package", "commands"), [("metaopt", METAOPT_COMMANDS), ("geodesics", GEODESICS_COMMANDS)])
@pytest.mark.parametrize("argv", [["--help"], []], ids=["help", "no-args"])
def test_the_command_list_prints_without_importing_torch(package: str, commands: list[str], argv: list[str]) -> None:
    result = report(fresh(CLI_SCRIPT.format(package=package, argv=argv)))
    assert result["status"] == 0
    assert all(f"    {name}" in result["out"] for name in commands), result["out"]
    assert not result["torch"]


@pytest.mark.parametrize("package", ["metaopt", "geodesics"])
def test_an_unknown_command_is_a_usage_error_without_importing_torch(package: str) -> None:
    result = report(fresh(CLI_SCRIPT.format(package=package, argv=["no-such-command"])))
    assert result["status"] == 2 and "invalid choice" in result["err"]
    assert not result["torch"]


def test_a_commands_help_shows_its_options() -> None:
    result = report(fresh(CLI_SCRIPT.format(package="metaopt", argv=["fit", "--help"])))
    assert result["status"] == 0 and "task.name" in result["out"]


@pytest.mark.parametrize("package", ["metaopt", "geodesics"])
def test_every_command_names_a_schema_and_a_function_that_exist(package: str) -> None:
    commands = importlib.import_module(f"{package}.cli").COMMANDS
    assert all(dataclasses.is_dataclass(command.schema) and callable(command.run) for command in commands)


def test_import_envs_registers_every_gymnasium_id_without_importing_torch_or_the_tasks() -> None:
    script = """
import json, sys
import envs, gymnasium as gym
ids = sorted(k for k in gym.registry if k.startswith("metaopt/"))
light = "torch" not in sys.modules and "envs.tasks" not in sys.modules
env = gym.make("metaopt/Quadratic-v0")
print(json.dumps({"ids": ids, "light": light, "made": type(env.unwrapped).__name__}))
"""
    result = report(fresh(script))
    assert result["light"] and result["made"] == "OptimizeeEnv"
    assert result["ids"] == sorted([*envs.ENV_IDS.values(), *envs.LR_ENV_IDS.values()])


def test_the_reference_env_names_are_what_the_task_classes_give() -> None:
    reference = set(envs.gym.REFERENCE_ENV_NAMES)
    assert reference <= set(envs.list_tasks())
    assert {name for name in envs.list_tasks() if envs.get_task_class(name).__module__.startswith("envs.tasks.")} == (
        reference
    )
    for name, gym_name in envs.gym.REFERENCE_ENV_NAMES.items():
        assert envs.gym.env_id(name) == f"metaopt/{gym_name}-v0"


def test_the_task_registry_loads_the_reference_tasks_when_consulted_directly() -> None:
    script = """
import dataclasses
import importlib
import json
from envs.task.registry import make_task
task = make_task("quadratic")
print(json.dumps({"task": task.name}))
"""
    assert report(fresh(script)) == {"task": "quadratic"}


def test_import_metaopt_registers_the_learned_optimizer_by_name_and_higher_gets_its_twin(tmp_path) -> None:
    script = f"""
import json, sys
import envs, metaopt
registered = "learned" in envs.list_optimizers() and "metaopt.shells" not in sys.modules
import higher, torch
from metaopt.checkpoint import save_checkpoint
from metaopt.rules import CoordinateLSTM
save_checkpoint({str(tmp_path / "net.pt")!r}, CoordinateLSTM())
params = [torch.zeros(3, requires_grad=True)]
opt = envs.make_optimizer("learned", params, checkpoint={str(tmp_path / "net.pt")!r})
twin = higher.optim.get_diff_optim(opt, params)
print(json.dumps({{"registered": registered, "opt": type(opt).__name__, "twin": type(twin).__name__}}))
"""
    result = report(fresh(script))
    assert result == {"registered": True, "opt": "LearnedOptimizer", "twin": "DifferentiableLearnedOptimizer"}


@pytest.mark.parametrize("package", [envs, geodesics, metaopt], ids=lambda p: p.__name__)
def test_every_public_name_resolves_and_is_listed(package: object) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    assert all(getattr(package, name) is not None for name in names)
    assert set(names) <= set(dir(package))
    with pytest.raises(AttributeError):
        package.no_such_name  # type: ignore[attr-defined]  # noqa: B018
