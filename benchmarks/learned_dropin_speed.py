"""Cost of the learned optimizer in drop-in use: time per ``step()`` and per training step, relative to Adam.

Trains a task's model in a plain loop with ``torch.optim.Adam`` and with ``LearnedOptimizer`` (an untrained network
of the paper's size: the cost does not depend on the weights) and prints one JSON object per task.

    OMP_NUM_THREADS=1 python benchmarks/learned_dropin_speed.py [--tasks digits_mlp charlm] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

import envs
from metaopt import CoordinateLSTM, LearnedOptimizer


def timed(
    task: envs.Task, make: Callable[[list[torch.Tensor]], torch.optim.Optimizer], steps: int
) -> tuple[float, float]:
    """Seconds per optimizer.step() and per whole training step (forward, backward, step)."""
    model = task.init_model(0)
    optimizer = make(list(model.parameters()))
    batches = task.batches(0)
    step_time = 0.0
    started = time.perf_counter()
    for _ in range(steps):
        loss = task.loss(model, next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t0 = time.perf_counter()
        optimizer.step()
        step_time += time.perf_counter() - t0
    return step_time / steps, (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["digits_mlp", "digits_cnn", "charlm"])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    net = CoordinateLSTM()
    for name in args.tasks:
        task = envs.make_task(name)
        makers = {
            "adam": lambda params: torch.optim.Adam(params, lr=1e-3),
            "learned": lambda params: LearnedOptimizer(params, net=net),
        }
        for make in makers.values():
            timed(task, make, 10)  # warm-up
        adam_step, adam_total = timed(task, makers["adam"], args.steps)
        learned_step, learned_total = timed(task, makers["learned"], args.steps)
        print(json.dumps({
            "benchmark": "learned_dropin_speed",
            "task": name,
            "params": task.num_params,
            "threads": torch.get_num_threads(),
            "adam_step_ms": round(adam_step * 1e3, 3),
            "learned_step_ms": round(learned_step * 1e3, 3),
            "step_ratio": round(learned_step / adam_step, 2),
            "adam_train_step_ms": round(adam_total * 1e3, 3),
            "learned_train_step_ms": round(learned_total * 1e3, 3),
            "train_step_ratio": round(learned_total / adam_total, 2),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
