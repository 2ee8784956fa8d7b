"""The benchmark scripts' command lines: every one takes ``--device``, and ``benchmarks/gpu.sh`` parses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
NOT_SCRIPTS = {"common.py", "reference_dss.py"}  # helpers the scripts import
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name not in NOT_SCRIPTS)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# One interpreter runs every script's ``--help`` (the imports are paid once): {script: [exit status, help text]}.
HELP_DRIVER = r"""
import contextlib, io, json, runpy, sys
sys.path.insert(0, sys.argv[1])
out = {}
for name in sys.argv[2:]:
    sys.argv[:] = [name, "--help"]
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            runpy.run_path(f"{sys.path[0]}/{name}", run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    out[name] = [code, buffer.getvalue()]
print(json.dumps(out))
"""


def test_every_script_is_listed() -> None:
    assert {"compare_sweep.py", "curve_throughput.py", "distributed.py", "learned_meta_speed.py"} <= set(SCRIPTS)


def test_every_benchmark_takes_device() -> None:
    done = subprocess.run([sys.executable, "-c", HELP_DRIVER, str(BENCHMARKS), *SCRIPTS], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name in SCRIPTS:
        code, text = results[name]
        assert code == 0, f"{name} --help exited {code}"
        assert "--device" in text, f"{name} --help does not mention --device"


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_gpu_script_parses() -> None:
    done = subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_exits_2() -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / "threads.py"), "--device", "cuda"], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=60)  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "CUDA is not available" in done.stderr
    assert done.stdout == ""


def test_dropin_sweep_on_a_transformer_sizes_the_model_and_times_it() -> None:
    """``learned_dropin_speed.py --model transformer``: the width gives the count asked for, and a row comes out."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import learned_dropin_speed as sweep
    finally:
        sys.path.remove(str(BENCHMARKS))
    for size in (10_000, 100_000, 1_000_000):
        width = sweep.width_for(size, "transformer")
        model = sweep.build_model(width, torch.device("cpu"), "transformer")
        count = sum(p.numel() for p in model.parameters())
        assert count == sweep.transformer_params(width) and width % 4 == 0
        assert abs(count - size) <= abs(sweep.transformer_params(width + 4) - size)  # nearest of its neighbours
        assert abs(count - size) <= abs(sweep.transformer_params(max(width - 4, 4)) - size)
    done = subprocess.run([sys.executable, str(BENCHMARKS / "learned_dropin_speed.py"), "--model", "transformer",
                           "--sizes", "3000", "--rules", "tiny", "--repeats", "1", "--budget", "1e4", "--batch", "2"],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["model"] == "transformer" and row["rule"] == "tiny" and row["batch"] == 2
    assert row["params"] == sweep.transformer_params(sweep.width_for(3000, "transformer"))
    assert row["step_ratio"] > 0 and row["train_step_ratio"] > 0
    table = done.stderr[done.stderr.index("| rule, step over Adam's") :]
    assert f"| tiny | {row['step_ratio']:.2f}x ({row['train_step_ratio']:.2f}x) |" in table


def test_dropin_sweep_summary_puts_each_rule_and_size_in_its_cell() -> None:
    """The table at the end of ``learned_dropin_speed.py``: rows by rule, columns by size, a missing cell a dash."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import learned_dropin_speed as sweep
    finally:
        sys.path.remove(str(BENCHMARKS))

    def row(rule: str, params: int, step: float, train: float, adam: float, load: float) -> dict:
        return {"rule": rule, "params": params, "step_ratio": step, "train_step_ratio": train, "adam_step_ms": adam,
                "threads": 1, "load_average": [load, 0.0, 0.0]}  # fmt: skip

    rows = [row("tiny", 100_000, 4.0, 2.0, 0.5, 1.5), row("tiny", 10_000, 3.0, 1.5, 0.25, 0.5),
            row("lstm", 10_000, 12.0, 6.0, 0.25, 0.75)]  # fmt: skip
    lines = sweep.summary(rows).splitlines()
    assert lines[0] == "| rule, step over Adam's (training step) | 10,000 | 100,000 |"
    assert lines[2] == "| tiny | 3.00x (1.50x) | 4.00x (2.00x) |"  # sizes in order, whatever order the rows came in
    assert lines[3] == "| lstm | 12.00x (6.00x) | - |"
    assert lines[4] == "| Adam's step, ms | 0.25 | 0.5 |"
    assert lines[-1] == "threads 1; load average 0.50-1.50"
