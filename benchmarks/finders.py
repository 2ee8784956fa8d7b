"""Path finders on the same pair: loss evaluations, gradients and wall time each spends to connect it.

For each task the same two endpoints (trained below L0 from seeds 0 and 1, B aligned by weight matching with
``--align weight_matching``) are connected by every registered built-in finder (greedy and constrained DSS, NEB,
Bezier, polychain) with the same settings and budget (``--max-evaluations``, ``--max-seconds``). Reaching the same
barrier means connecting at L0: every finder's path is certified by the same segment checks, so ``connected`` is
the same statement for all. Prints one JSON line per (task, finder) with the outcome, the evaluations
(``ParamSpace.evaluations``) and seconds, their ratio to greedy DSS, the threads and the load average.

    python benchmarks/finders.py [--device cpu|cuda|auto] [--tasks poly_cubic permutation] [--align weight_matching]
"""

from __future__ import annotations

import argparse
import os
import time

from common import add_device_argument, emit, machine, parse_device, sync

import envs
from geodesics import DSSConfig, ParamSpace, connect, train_to_threshold
from geodesics.alignment import align

FINDERS = ["greedy", "constrained", "neb", "bezier", "polychain"]
SETTINGS = {"poly_cubic": (0.05, 0, 1), "permutation": (0.01, 1, 2), "digits_mlp": (0.15, 0, 1)}
"""Task: (L0, seed of A, seed of B); the permutation task's seed 0 does not train below its L0."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_argument(parser)
    parser.add_argument("--tasks", nargs="+", default=["poly_cubic", "permutation"])
    parser.add_argument("--finders", nargs="+", default=FINDERS)
    parser.add_argument("--align", default="none", choices=["none", "weight_matching"])
    parser.add_argument("--max-evaluations", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    for name in args.tasks:
        threshold, seed_a, seed_b = SETTINGS[name]
        task = envs.make_task(name, device=device)
        space = ParamSpace(task)
        a = train_to_threshold(task, seed_a, threshold)
        b = align(space, a, train_to_threshold(task, seed_b, threshold), args.align)
        reference: dict[str, float] = {}
        for finder in args.finders:
            config = DSSConfig(finder=finder, max_evaluations=args.max_evaluations, max_seconds=args.max_seconds,
                               keep_snapshots=False)  # fmt: skip
            evaluations, gradients = space.evaluations, space.gradients
            sync(device)
            start = time.perf_counter()
            string = connect(space, a, b, threshold, config)
            sync(device)
            seconds = time.perf_counter() - start
            used = space.evaluations - evaluations
            reference = reference or {"evaluations": used, "seconds": seconds}
            emit({
                "benchmark": "finders", "task": name, "finder": finder, "threshold": threshold, "align": args.align,
                "device": str(device), "connected": string.connected, "failure": string.failure,
                "barrier": string.max_loss_upper - string.endpoint_loss, "normalized_length": string.normalized_length,
                "num_beads": string.num_beads, "evaluations": used, "gradients": space.gradients - gradients,
                "seconds": round(seconds, 3), "evaluations_over_first": round(used / reference["evaluations"], 2),
                "seconds_over_first": round(seconds / reference["seconds"], 2), "first": args.finders[0],
                "max_evaluations": args.max_evaluations, "load_average": os.getloadavg(), **machine(),
            })  # fmt: skip


if __name__ == "__main__":
    main()
