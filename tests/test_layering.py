"""Imports point one way: envs imports neither geodesics nor metaopt, geodesics never imports metaopt, and no engine
module of envs or geodesics imports its commands (metaopt's own rules: tests/metaopt/test_layout.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("path", files("envs"), ids=lambda p: str(p.relative_to(ROOT)))
def test_envs_imports_neither_geodesics_nor_metaopt_and_its_engine_never_imports_commands(path: Path) -> None:
    modules = imported_modules(path)
    assert not [m for m in modules if under(m, "geodesics") or under(m, "metaopt")]
    if "commands" not in path.relative_to(ROOT / "envs").parts:
        assert not [m for m in modules if under(m, "envs.commands")]


@pytest.mark.parametrize("path", files("geodesics"), ids=lambda p: str(p.relative_to(ROOT)))
def test_geodesics_never_imports_metaopt_and_its_engine_never_imports_commands(path: Path) -> None:
    modules = imported_modules(path)
    assert not [m for m in modules if under(m, "metaopt")]
    relative = path.relative_to(ROOT / "geodesics")
    if "commands" not in relative.parts and path.name not in ("cli.py", "__main__.py"):
        assert not [m for m in modules if under(m, "geodesics.commands")]


@pytest.mark.parametrize("name", ["optim", "functional", "schedules", "fit"])
def test_the_foundations_old_module_names_are_the_moved_modules(name: str) -> None:
    import importlib

    assert importlib.import_module(f"envs.{name}") is importlib.import_module(f"envs.training.{name}")


@pytest.mark.parametrize("name", ["registry", "contract", "nn"])
def test_the_task_modules_old_names_are_the_moved_modules(name: str) -> None:
    import importlib

    assert importlib.import_module(f"envs.{name}") is importlib.import_module(f"envs.task.{name}")


TASK_SIDE = [p for package in ("envs/task", "envs/tasks", "envs/data") for p in files(package)]


@pytest.mark.parametrize("path", TASK_SIDE, ids=lambda p: str(p.relative_to(ROOT)))
def test_tasks_and_data_never_import_the_training_loop_or_the_run_tooling(path: Path) -> None:
    """What a task is stands apart from how it is trained and from the command lines (the generic registry apart)."""
    modules = imported_modules(path)
    assert not [m for m in modules if under(m, "envs.training") or under(m, "envs.commands")]
    assert not [m for m in modules if under(m, "envs.tooling") and m != "envs.tooling.registry"]
