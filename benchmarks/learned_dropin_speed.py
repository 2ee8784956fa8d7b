"""Cost of the learned optimizers in drop-in use: time per ``step()`` and per training step, relative to Adam.

Trains a task's model in a plain loop with ``torch.optim.Adam`` and with ``LearnedOptimizer`` over each learned rule
(untrained rules of the default sizes: the cost does not depend on the weights), alternating Adam and the rules in
``--repeats`` rounds in one process and keeping each one's best round. Prints one JSON object per task and rule, with
the ratios, the optimizer state per coordinate, the device, the thread count and the load average. On CUDA the
device is synchronized around every timed ``step()`` and around each timed loop.

    OMP_NUM_THREADS=1 python benchmarks/learned_dropin_speed.py [--tasks digits_mlp charlm] [--rules lstm mlp]
        [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import torch
from common import add_device_argument, parse_device, sync

import envs
from metaopt import LearnedOptimizer
from metaopt.rules import make_rule


def timed(
    task: envs.Task, make: Callable[[list[torch.Tensor]], torch.optim.Optimizer], steps: int, device: torch.device
) -> tuple[float, float, float]:
    """Seconds per optimizer.step() and per whole training step, and optimizer-state floats per coordinate."""
    model = task.init_model(0)
    optimizer = make(list(model.parameters()))
    batches = task.batches(0)
    step_time = 0.0
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        loss = task.loss(model, next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync(device)
        t0 = time.perf_counter()
        optimizer.step()
        sync(device)
        step_time += time.perf_counter() - t0
    sync(device)
    total = time.perf_counter() - started
    floats = sum(v.numel() for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v))
    return step_time / steps, total / steps, floats / task.num_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["digits_mlp", "digits_cnn", "charlm"])
    parser.add_argument("--rules", nargs="+", default=["lstm", "mlp"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    add_device_argument(parser, default="cpu")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    rules = {name: make_rule(name, {}).to(device) for name in args.rules}
    for name in args.tasks:
        task = envs.make_task(name, device=device)
        makers: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {
            "adam": lambda params: torch.optim.Adam(params, lr=1e-3)
        }
        for rule_name, rule in rules.items():
            makers[rule_name] = lambda params, rule=rule: LearnedOptimizer(params, rule=rule)
        for make in makers.values():
            timed(task, make, 10, device)  # warm-up
        best = {key: (float("inf"), float("inf"), 0.0) for key in makers}
        for _ in range(args.repeats):  # alternate, so a change in the machine's load hits every optimizer alike
            for key, make in makers.items():
                step, total, floats = timed(task, make, args.steps, device)
                best[key] = (min(best[key][0], step), min(best[key][1], total), floats)
        adam_step, adam_total, adam_floats = best["adam"]
        for rule_name in rules:
            step, total, floats = best[rule_name]
            print(json.dumps({
                "benchmark": "learned_dropin_speed", "task": name, "rule": rule_name, "params": task.num_params,
                "device": str(device), "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
                "adam_step_ms": round(adam_step * 1e3, 3), "rule_step_ms": round(step * 1e3, 3),
                "step_ratio": round(step / adam_step, 2), "adam_train_step_ms": round(adam_total * 1e3, 3),
                "rule_train_step_ms": round(total * 1e3, 3), "train_step_ratio": round(total / adam_total, 2),
                "state_floats_per_coordinate": round(floats, 3), "adam_state_floats_per_coordinate": adam_floats,
            }))  # fmt: skip


if __name__ == "__main__":
    main()
