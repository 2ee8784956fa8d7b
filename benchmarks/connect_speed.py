"""``connect`` wall time: the batched engine versus a sequential reference-style DSS on the same endpoints.

For each task the same two endpoints (trained below L0 from seeds 0 and 1) are connected by ``geodesics.connect``
(breadth-first, all new beads of a round trained in one batch, all new segments checked in one batched call) and by
``reference_dss.SequentialDSS`` (depth-first, one bead at a time, curves point by point) in two flavours: the
reference style (a newly built model for every interpolation point, as the public code builds a new graph) and an
optimized sequential loop (one model reused). All three make the same decisions (grid, refinement, alpha, checks,
batch streams; bead jitter off). Prints one JSON line per task: the times, the engine's speed-up over each, and the
outcomes (connected, number of beads, normalized length).

    python benchmarks/connect_speed.py [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import add_device_argument, emit, machine, parse_device, sync
from reference_dss import SequentialDSS

import envs
from geodesics import DSSConfig, ParamSpace, connect, train_to_threshold

SETTINGS = {"poly_cubic": 0.05, "digits_mlp": 0.15}


def normalized_length(beads: list[torch.Tensor]) -> float:
    stack = torch.stack(beads).double()
    return float((stack[1:] - stack[:-1]).norm(dim=1).sum() / (stack[-1] - stack[0]).norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_argument(parser)
    parser.add_argument("--tasks", nargs="+", default=list(SETTINGS))
    args = parser.parse_args()
    device = parse_device(parser, args.device)
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
        result = {
            "benchmark": "connect_speed", "task": name, "threshold": threshold, "device": str(device),
            "engine_seconds": engine, "engine_connected": string.connected, "engine_beads": string.num_beads,
            "engine_normalized_length": string.normalized_length, **machine(),
        }  # fmt: skip
        for label, fresh in (("reference_style", True), ("sequential_optimized", False)):
            reference = SequentialDSS(task, threshold, alpha=config.alpha, max_steps=config.max_steps,
                                      check_every=config.check_every, max_depth=config.max_rounds,
                                      fresh_models=fresh)  # fmt: skip
            sync(device)
            start = time.perf_counter()
            beads = reference.connect(a, b)
            sync(device)
            seconds = time.perf_counter() - start
            result.update({
                f"{label}_seconds": seconds, f"speedup_vs_{label}": seconds / engine,
                f"{label}_connected": not reference.failed, f"{label}_beads": len(beads),
                f"{label}_normalized_length": normalized_length(beads),
            })  # fmt: skip
        emit(result)


if __name__ == "__main__":
    main()
