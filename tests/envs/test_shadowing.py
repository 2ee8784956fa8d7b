"""A user's own ``configs/`` or ``envs/`` package in the working directory must not stand in for the project's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the project importable, the working directory first on sys.path
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _package(where: Path, name: str) -> None:
    (where / name).mkdir()
    (where / name / "__init__.py").write_text('"""A user\'s own package of the same name."""\n')


def test_a_configs_package_in_the_working_directory_does_not_hide_the_shipped_configs(tmp_path: Path) -> None:
    _package(tmp_path, "configs")
    (tmp_path / "configs" / "metaopt").mkdir()
    found = _run(
        tmp_path, "-c", "from envs.tooling.config import find_config; print(find_config('metaopt/quadratic.yaml'))"
    )
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == ROOT / "configs" / "metaopt" / "quadratic.yaml"
    # through the command line: the shipped file is read (its bad override is what is refused), nothing is written
    done = _run(tmp_path, "-m", "metaopt", "train", "metaopt/quadratic.yaml", f"out={tmp_path / 'run'}", "episodes=0")
    assert done.returncode == 2, done.stderr
    assert "episodes" in done.stderr and "not found" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_an_envs_package_in_the_working_directory_is_refused_by_name(tmp_path: Path) -> None:
    _package(tmp_path, "envs")
    for package in ("metaopt", "geodesics"):
        done = _run(tmp_path, "-c", f"import {package}")
        assert done.returncode != 0
        message = done.stderr.strip().splitlines()[-1]
        assert message.startswith("ImportError:") and "shadows the package 'envs'" in message
        assert str(tmp_path / "envs" / "__init__.py") in message
