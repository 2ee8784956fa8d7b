"""Where splitting an operation across intra-op threads pays: training steps of each task at 1 and N threads.

For each task, the recipe's optimizer trains the model for ``--steps`` steps at each thread count in turn, alternating
for ``--repeats`` rounds in one process (so a change in the machine's load hits both alike); the best round is kept.
Prints one JSON line per task: seconds per step at each count, the ratio, the forward FLOPs per batch, and the load
average. The commands' ``threads=0`` policy (one thread) comes from these figures. With ``--device cuda`` the model
trains on the GPU (synchronized around each timed loop) and the thread count is that of the host side.

    python benchmarks/threads.py [--tasks digits_mlp digits_cnn charlm] [--threads 1 2] [--steps 100]
        [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from common import add_device_argument, emit, forward_flops, parse_device, sync

import envs


def seconds_per_step(task: envs.Task, threads: int, steps: int, device: torch.device) -> float:
    torch.set_num_threads(threads)
    model = task.init_model(0)
    opt = envs.make_optimizer(task.recipe.optimizer, model.parameters(), lr=task.recipe.lr)
    batches = task.batches(0)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        task.loss(model, next(batches)).backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["digits_mlp", "digits_cnn", "charlm"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    add_device_argument(parser, default="cpu")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    for name in args.tasks:
        task = envs.make_task(name, device=device)
        batch = next(task.batches(0))
        flops = forward_flops(task.init_model(0), batch[0])
        best = {n: float("inf") for n in args.threads}
        for n in args.threads:
            seconds_per_step(task, n, 5, device)  # warm-up
        for _ in range(args.repeats):
            for n in args.threads:
                best[n] = min(best[n], seconds_per_step(task, n, args.steps, device))
        low, high = min(args.threads), max(args.threads)
        emit({"benchmark": "threads", "task": name, "device": str(device), "params": task.num_params,
              "forward_mflops": flops / 1e6,
              **{f"ms_per_step_{n}": round(best[n] * 1e3, 3) for n in args.threads},
              f"speedup_{high}_over_{low}": round(best[low] / best[high], 2), "load_average": os.getloadavg(),
              "cpus": os.cpu_count()})  # fmt: skip


if __name__ == "__main__":
    main()
