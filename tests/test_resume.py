"""Killed with ``kill -9`` at a random point and rerun, each long command ends with what an uninterrupted run writes.

Each case runs the command twice in fresh processes: once straight through, once killed (SIGKILL) after a randomly
chosen number of its records (so the kill lands mid-run, between units of work or inside one) and then rerun with the
same ``out=``. The two run directories must hold the same records, reports, CSVs, tensors, PNGs and TensorBoard
scalars (``envs.tooling.rundiff``: wall-clock figures aside).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envs.tooling.rundiff import diff_runs

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CASES = {
    "geodesics sweep": (
        ["geodesics", "sweep", "configs/geodesics/sweep/poly_cubic.yaml", "thresholds=[0.2,0.1]", "pairs=2",
         "concurrent=1", "dss.max_steps=300"],
        4,
    ),
    "metaopt targets": (["metaopt", "targets", "configs/metaopt/targets/poly_cubic.yaml", "seeds=3", "steps=100"], 3),
    "metaopt compare": (
        ["metaopt", "compare", "configs/compare/quadratic.yaml", "tuning_seeds=2", "eval_seeds=4",
         "optimizers=[sgd,adam]", "tasks.quadratic.steps=30"],
        50,
    ),
    "metaopt train": (
        ["metaopt", "train", "configs/metaopt/quadratic.yaml", "episodes=16", "steps=20", "truncation=10",
         "meta_batch=2", "val_every=4", "val_seeds=2", "tune_seeds=2"],
        16,
    ),
}  # fmt: skip


def command(argv: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", argv[0], *argv[1:], f"out={out}"]


def records(out: Path) -> int:
    path = out / "records.jsonl"
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def run_to_the_end(argv: list[str], out: Path) -> None:
    done = subprocess.run(command(argv, out), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def kill_after(argv: list[str], out: Path, units: int) -> int:
    """Start the command, SIGKILL it once ``units`` records are on disk; returns the records it left."""
    proc = subprocess.Popen(command(argv, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while proc.poll() is None and records(out) < units and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed; give it more work"
    return records(out)


@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_and_resumed_equals_uninterrupted(case: str, tmp_path: Path) -> None:
    argv, total = CASES[case]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_to_the_end(argv, clean)
    assert records(clean) >= total
    units = random.Random(case).randint(1, total - 1)  # a reproducible "random" point, different per command
    left = kill_after(argv, killed, units)
    assert 0 < left < records(clean)
    run_to_the_end(argv, killed)
    differences = diff_runs(clean, killed)
    assert differences == [], "\n".join(differences[:20])
