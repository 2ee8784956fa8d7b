"""Throughput against the number of ranks: a small sweep and a few meta-training episodes, alone and under torchrun.

Each workload runs as a whole command (``python -m geodesics sweep ...``, and ``python -m torch.distributed.run
--standalone --nproc_per_node=N -m geodesics sweep ...`` for N > 1), one intra-op thread per rank, into a fresh run
directory; the rank counts alternate for ``--repeats`` rounds (so a change in the machine's load hits each alike) and
the best round is kept. Wall time is end to end as a user sees it: interpreter start, process group, work, report.
Prints one JSON line per workload: seconds and units per minute at each rank count, the ratio, threads per rank, CPU
count and the load average before and after.

``--device cuda`` runs each command with ``device=cuda``: under torchrun that is NCCL with one rank per GPU (rank k on
GPU ``LOCAL_RANK`` k), so a rank count above the number of visible GPUs is skipped and named in the line's
``skipped_ranks`` (2 ranks need at least 2 GPUs). The ``targets`` workload (``metaopt targets``, 2 base runs) is
measured only when named in ``--workloads``.

    python benchmarks/distributed.py [--ranks 1 2] [--repeats 2] [--device cpu|cuda|auto] [--workloads sweep train]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import add_device_argument, emit, parse_device

WORKLOADS = {
    "sweep": (["geodesics", "sweep", "configs/geodesics/sweep/poly_cubic.yaml", "thresholds=[0.2,0.15]", "pairs=4",
               "concurrent=1", "dss.max_steps=300"], 8, "groups"),
    "train": (["metaopt", "train", "configs/metaopt/quadratic.yaml", "episodes=4", "steps=20", "truncation=10",
               "meta_batch=8", "val_every=100", "val_seeds=2", "tune_seeds=2"], 4 * 2 * 8, "unrolls"),
    "targets": (["metaopt", "targets", "configs/metaopt/targets/poly_cubic.yaml", "seeds=2", "steps=100"], 2,
                "base_runs"),
}  # fmt: skip
"""name -> (command, units of work, what a unit is): 8 sweep groups; 4 episodes of 2 truncations of 8 optimizees;
2 base runs of 100 steps, each connected in 20-step windows."""
DEFAULT_WORKLOADS = ["sweep", "train"]

ROOT = Path(__file__).resolve().parent.parent


def seconds(argv: list[str], ranks: int, device: str, out: Path) -> float:
    """Wall time of the whole command with ``ranks`` processes."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else []
    launch = [sys.executable, *torchrun, "-m", argv[0]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([*launch, *argv[1:], f"device={device}", f"out={out}"], env=env, cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:2])} with {ranks} ranks failed:\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workloads", nargs="+", default=DEFAULT_WORKLOADS, choices=sorted(WORKLOADS))
    add_device_argument(parser, default="cpu")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    command_device = device.type if device.type == "cuda" else str(device)  # cuda: each rank takes GPU LOCAL_RANK
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    ranks = [n for n in args.ranks if device.type != "cuda" or n <= gpus]
    skipped = [n for n in args.ranks if n not in ranks]
    if not ranks:
        parser.error(f"--ranks {args.ranks}: NCCL runs one rank per GPU and this machine has {gpus}")
    scratch = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    try:
        for name in args.workloads:
            argv, units, unit = WORKLOADS[name]
            load_before = os.getloadavg()
            best = {n: float("inf") for n in ranks}
            for _ in range(args.repeats):
                for n in ranks:
                    best[n] = min(best[n], seconds(argv, n, command_device, scratch / f"{name}-{n}"))
            low, high = min(ranks), max(ranks)
            emit({"benchmark": "distributed", "workload": name, "device": str(device), "units": units, "unit": unit,
                  **{f"seconds_{n}": round(best[n], 2) for n in ranks},
                  **{f"{unit}_per_minute_{n}": round(60 * units / best[n], 1) for n in ranks},
                  "gpus": gpus, "skipped_ranks": skipped,
                  "note": f"NCCL: one rank per GPU; {gpus} GPU(s) visible" if skipped else None,
                  f"speedup_{high}_over_{low}": round(best[low] / best[high], 2), "threads_per_rank": 1,
                  "cpus": os.cpu_count(), "load_average_before": load_before,
                  "load_average_after": os.getloadavg()})  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
