"""What the exact evaluation costs: whole ``connect`` runs with the loop strategy against vmap and bmm.

``strategy=loop`` (exact, the CPU default), ``strategy=vmap`` and, for MLP tasks, ``strategy=bmm`` connect the same
endpoints, timed alternately in one process.

Prints one JSON line per task: the best time of each strategy over ``--repeats`` alternating runs, the ratios
vmap/loop and bmm/loop (above 1: the loop is faster; bmm null where the model is not a plain MLP), the outcomes of
each (they agree to rounding, not bit for bit), the thread count and the machine's load average.

    python benchmarks/strategy_speed.py [--device cpu|cuda|auto] [--tasks poly_cubic digits_mlp] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time

from common import add_device_argument, emit, machine, parse_device, sync

import envs
from geodesics import DSSConfig, ParamSpace, connect, train_to_threshold

SETTINGS = {"poly_cubic": 0.05, "digits_mlp": 0.15, "digits_cnn": 0.2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_argument(parser)
    parser.add_argument("--tasks", nargs="+", default=["poly_cubic", "digits_mlp"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    for name in args.tasks:
        threshold = SETTINGS[name]
        task = envs.make_task(name, device=device)
        a, b = train_to_threshold(task, 0, threshold), train_to_threshold(task, 1, threshold)
        config = DSSConfig(keep_snapshots=False)
        strategies = ["loop", "vmap"] + (["bmm"] if _takes_bmm(task) else [])
        best = {strategy: float("inf") for strategy in strategies}
        outcome = {}
        for _ in range(args.repeats):
            for strategy in strategies:
                space = ParamSpace(task, strategy=strategy)
                sync(device)
                start = time.perf_counter()
                string = connect(space, a, b, threshold, config)
                sync(device)
                best[strategy] = min(best[strategy], time.perf_counter() - start)
                outcome[strategy] = (string.connected, string.num_beads, round(string.normalized_length, 6))
        emit({
            "benchmark": "strategy_speed", "task": name, "threshold": threshold, "device": str(device),
            "loop_seconds": best["loop"], "vmap_seconds": best["vmap"], "vmap_over_loop": best["vmap"] / best["loop"],
            "bmm_seconds": best.get("bmm"), "bmm_over_loop": best["bmm"] / best["loop"] if "bmm" in best else None,
            "loop_outcome": outcome["loop"], "vmap_outcome": outcome["vmap"], "bmm_outcome": outcome.get("bmm"),
            "load_average": os.getloadavg(),
            **machine(),
        })  # fmt: skip


def _takes_bmm(task: envs.Task) -> bool:
    try:
        ParamSpace(task, strategy="bmm")
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    main()
