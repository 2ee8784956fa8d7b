"""Cost of the learned optimizers in drop-in use: time per ``step()`` and per training step, relative to Adam.

Trains a task's model in a plain loop with ``torch.optim.Adam`` and with ``LearnedOptimizer`` over each learned rule
(untrained rules of the default sizes: the cost does not depend on the weights), alternating Adam and the rules in
``--repeats`` rounds in one process and keeping each one's best round. Prints one JSON object per task and rule, with
the ratios, the optimizer state per coordinate, the device, the thread count and the load average. On CUDA the
device is synchronized around every timed ``step()`` and around each timed loop.

    OMP_NUM_THREADS=1 python benchmarks/learned_dropin_speed.py [--tasks digits_mlp charlm] [--rules lstm mlp]
        [--device cpu|cuda|auto]

With ``--sizes 1500 10000 100000 1000000`` it sweeps the parameter count instead: a 3-layer tanh MLP (64 -> w -> w ->
10, w chosen for the count) on a fixed batch of 128, against ``torch.optim.Adam(foreach=True)``. Besides the step and
training-step ratios it prints Adam's memory-bandwidth bound (28 bytes moved per parameter and step, at the copy
bandwidth measured in the same process), the rule's FLOP per parameter and step (torch's FLOP counter) with the share
of the matmul peak it achieves, and the optimizer state per parameter. Rules are chosen by their registered names
(``--rules``), so a rule registered later is measured without a change here.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import torch
from common import add_device_argument, matmul_peak_gflops, parse_device, sync
from torch import nn

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
    parser.add_argument("--sizes", nargs="+", type=int, default=[], help="sweep parameter counts, not tasks")
    add_device_argument(parser, default="cpu")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    rules = {name: make_rule(name, {}).to(device) for name in args.rules}
    if args.sizes:
        sweep(args.sizes, rules, args.repeats, device)
        return
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


def mlp_of(params: int) -> nn.Module:
    """A 64 -> w -> w -> 10 tanh MLP with about ``params`` parameters (w from w^2 + 76 w + 10 = params)."""
    width = max(1, round((-76 + (76**2 + 4 * max(0, params - 10)) ** 0.5) / 2))
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 10))


def copy_bandwidth(device: torch.device, floats: int = 1 << 24) -> float:
    """Bytes per second of a large tensor copy (read and write counted): the memory bandwidth the step can use."""
    source = torch.randn(floats, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        target.copy_(source)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * 4 * floats / best


def sweep_timed(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor], steps: int,
    device: torch.device,
) -> tuple[float, float]:  # fmt: skip
    """Seconds per ``step()`` and per whole training step (forward, backward, step) on one fixed batch."""
    inputs, targets = batch
    step_time = 0.0
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync(device)
        t0 = time.perf_counter()
        optimizer.step()
        sync(device)
        step_time += time.perf_counter() - t0
    sync(device)
    return step_time / steps, (time.perf_counter() - started) / steps


def step_flops(model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
    """FLOPs of one ``optimizer.step()`` (matmuls; the rule's MLP or LSTM), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
    counter = FlopCounterMode(display=False)
    with counter:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def sweep(sizes: list[int], rules: dict[str, nn.Module], repeats: int, device: torch.device) -> None:
    """The size sweep: one JSON line per size and rule."""
    bandwidth = copy_bandwidth(device)
    peak = matmul_peak_gflops(device, size=1024) * 1e9
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(128, 64, generator=g).to(device), torch.randint(0, 10, (128,), generator=g).to(device))
    for size in sizes:
        params = sum(p.numel() for p in mlp_of(size).parameters())
        steps = max(3, min(100, 20_000_000 // max(params, 1) // 20))
        makers: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {
            "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True)
        }
        for rule_name, rule in rules.items():
            makers[rule_name] = lambda ps, rule=rule: LearnedOptimizer(ps, rule=rule)
        models = {key: mlp_of(size).to(device) for key in makers}
        optimizers = {key: make(list(models[key].parameters())) for key, make in makers.items()}
        for key in makers:
            sweep_timed(models[key], optimizers[key], batch, 2, device)  # warm-up (state allocated)
        best = {key: (float("inf"), float("inf")) for key in makers}
        for _ in range(repeats):  # alternate, so a change in the machine's load hits every optimizer alike
            for key in makers:
                step, total = sweep_timed(models[key], optimizers[key], batch, steps, device)
                best[key] = (min(best[key][0], step), min(best[key][1], total))
        adam_step, adam_total = best["adam"]
        bound = 28 * params / bandwidth
        for rule_name in rules:
            step, total = best[rule_name]
            flops = step_flops(models[rule_name], optimizers[rule_name], batch)
            state = sum(v.numel() * v.element_size() for st in optimizers[rule_name].state.values()
                        for v in st.values() if torch.is_tensor(v))  # fmt: skip
            print(json.dumps({
                "benchmark": "learned_dropin_speed", "sweep": "size", "rule": rule_name, "params": params,
                "device": str(device), "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
                "steps_timed": steps, "adam_step_ms": round(adam_step * 1e3, 4), "rule_step_ms": round(step * 1e3, 4),
                "step_ratio": round(step / adam_step, 2), "train_step_ratio": round(total / adam_total, 2),
                "adam_bandwidth_bound_ms": round(bound * 1e3, 4), "adam_over_its_bound": round(adam_step / bound, 2),
                "rule_flop_per_param": round(flops / params, 1),
                "rule_share_of_matmul_peak": round(flops / step / peak, 4) if step > 0 else None,
                "rule_state_bytes_per_param": round(state / params, 1),
            }))  # fmt: skip


if __name__ == "__main__":
    main()
