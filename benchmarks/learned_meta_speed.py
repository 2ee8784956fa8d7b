"""Meta-training throughput of the learned optimizer: one batched LSTM call per step versus one call per tensor.

Times full meta-training episodes on ``digits_mlp`` (K inner steps in truncations of T, the meta-loss backpropagated
after each truncation, as ``metaopt train`` does) with the library's optimizer and with a reference twin that calls
the LSTM once per parameter tensor, and measures the memory an unroll keeps for its backward pass (the tensors saved
by autograd, counted once per storage) for truncations of T and for the untruncated K. Prints one JSON object. On
CUDA the device is synchronized around the timed episodes and the peak ``torch.cuda.max_memory_allocated`` is added.

    OMP_NUM_THREADS=1 python benchmarks/learned_meta_speed.py [--task digits_mlp] [--option depth=4] [--episodes 3]
        [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any

import higher
import torch
from common import add_device_argument, parse_device, peak_cuda_mb, sync
from torch import Tensor
from typing_extensions import override

import envs
from metaopt import CoordinateLSTM, DifferentiableLearnedOptimizer, LearnedOptimizer, optimizee_loss
from metaopt.inner import InnerState, unroll


class PerTensorLearnedOptimizer(LearnedOptimizer):
    """The straightforward way: same network, one LSTM call per parameter tensor (reference only)."""


class DifferentiablePerTensorLearnedOptimizer(DifferentiableLearnedOptimizer):
    """Twin of :class:`PerTensorLearnedOptimizer`."""

    @override
    def _update(self, grouped_grads: list[list[Tensor]], **kwargs: Any) -> None:
        rule = self.rule
        for group_idx, (group, grads) in enumerate(zip(self.param_groups, grouped_grads)):
            for p_idx, (p, g) in enumerate(zip(group["params"], grads)):
                if g is None:
                    continue
                pieces = self.state[group_idx][p_idx]
                state = pieces.get("per_tensor") or rule.join([pieces or rule.init_state(p)])
                g = g.detach() if self.first_order else g
                update, pieces["per_tensor"] = rule.step(g.reshape(-1), state, [p])
                group["params"][p_idx] = p + update.view_as(p)


higher.register_optim(PerTensorLearnedOptimizer, DifferentiablePerTensorLearnedOptimizer)


def episode(task: envs.Task, seed: int, net: CoordinateLSTM, cls: type, steps: int, truncation: int) -> None:
    problem = task.instance(seed)
    model = problem.init_model(seed)
    inner = InnerState(problem, model, cls(model.parameters(), net=net), problem.batches(seed))
    for _ in range(steps // truncation):
        net.zero_grad()
        optimizee_loss(unroll(inner, truncation, first_order=True)).backward()


def steps_per_second(
    task: envs.Task, cls: type, episodes: int, steps: int, truncation: int, device: torch.device
) -> float:
    net = CoordinateLSTM().to(device)
    episode(task, 0, net, cls, steps, truncation)  # warm-up
    sync(device)
    started = time.perf_counter()
    for seed in range(1, episodes + 1):
        episode(task, seed, net, cls, steps, truncation)
    sync(device)
    return episodes * steps / (time.perf_counter() - started)


def saved_bytes(task: envs.Task, truncation: int, device: torch.device) -> int:
    """Bytes autograd keeps for the backward pass of one truncation (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    net = CoordinateLSTM().to(device)
    problem = task.instance(0)
    model = problem.init_model(0)
    inner = InnerState(problem, model, LearnedOptimizer(model.parameters(), net=net), problem.batches(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = optimizee_loss(unroll(inner, truncation, first_order=True))
    loss.backward()
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits_mlp")
    parser.add_argument("--option", action="append", default=[], help="task option KEY=VALUE (repeatable)")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--truncation", type=int, default=20)
    add_device_argument(parser, default="cpu")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    options = dict(item.split("=", 1) for item in args.option)
    task = envs.make_task(args.task, device=device, **options)
    batched = steps_per_second(task, LearnedOptimizer, args.episodes, args.steps, args.truncation, device)
    per_tensor = steps_per_second(task, PerTensorLearnedOptimizer, args.episodes, args.steps, args.truncation, device)
    result = {
        "benchmark": "learned_meta_speed",
        "task": args.task,
        "options": options,
        "params": task.num_params,
        "tensors": len(list(task.init_model(0).parameters())),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "inner_steps_per_s_batched": round(batched, 1),
        "inner_steps_per_s_per_tensor": round(per_tensor, 1),
        "speedup": round(batched / per_tensor, 2),
        f"saved_for_backward_mb_T{args.truncation}": round(saved_bytes(task, args.truncation, device) / 2**20, 2),
        f"saved_for_backward_mb_T{args.steps}": round(saved_bytes(task, args.steps, device) / 2**20, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_cuda_mb": peak_cuda_mb(device),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
