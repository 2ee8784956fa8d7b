"""``connect`` wall time: the batched engine versus a sequential reference-style DSS on the same endpoints.

For each task the same two endpoints (trained below L0 from seeds 0 and 1) are connected by ``geodesics.connect``
(breadth-first, all new beads of a round trained in one batch, all new segments checked in one batched call) and by
``reference_dss.SequentialDSS`` (depth-first, one bead at a time, curves point by point), both with the same
decisions (grid, refinement, alpha, checks, batch streams; bead jitter off). Prints one JSON line per task: both
times, their ratio, and both outcomes (connected, number of beads, normalized length).

    python benchmarks/connect_speed.py [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import emit, machine, sync
from reference_dss import SequentialDSS

import envs
from envs.devices import resolve_device
from geodesics import DSSConfig, ParamSpace, connect
from geodesics.train import train_to_threshold

SETTINGS = {"poly_cubic": 0.05, "digits_mlp": 0.15}


def normalized_length(beads: list[torch.Tensor]) -> float:
    stack = torch.stack(beads).double()
    return float((stack[1:] - stack[:-1]).norm(dim=1).sum() / (stack[-1] - stack[0]).norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tasks", nargs="+", default=list(SETTINGS))
    args = parser.parse_args()
    device = resolve_device(args.device)
    for name in args.tasks:
        threshold = SETTINGS[name]
        task = envs.make_task(name, device=device)
        a, b = train_to_threshold(task, 0, threshold), train_to_threshold(task, 1, threshold)
        space = ParamSpace(task)
        config = DSSConfig(bead_noise=0.0, keep_snapshots=False)
        sync(device)
        start = time.perf_counter()
        string = connect(space, a, b, threshold, config)
        sync(device)
        engine = time.perf_counter() - start
        reference = SequentialDSS(task, threshold, alpha=config.alpha, max_steps=config.max_steps,
                                  check_every=config.check_every, max_depth=config.max_rounds)  # fmt: skip
        start = time.perf_counter()
        beads = reference.connect(a, b)
        sync(device)
        sequential = time.perf_counter() - start
        emit({
            "benchmark": "connect_speed", "task": name, "threshold": threshold, "device": str(device),
            "engine_seconds": engine, "reference_seconds": sequential, "ratio": sequential / engine,
            "engine_connected": string.connected, "engine_beads": string.num_beads,
            "engine_normalized_length": string.normalized_length,
            "reference_connected": not reference.failed, "reference_beads": len(beads),
            "reference_normalized_length": normalized_length(beads), **machine(),
        })  # fmt: skip


if __name__ == "__main__":
    main()
