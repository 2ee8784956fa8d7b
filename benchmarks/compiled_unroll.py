"""What a compiled truncation would gain in meta-training: the `higher` unroll against a functional one, compiled.

Meta-training's time on small optimizees is the number of operations (docs/results.md, meta-training throughput):
each differentiable inner step dispatches a few hundred small operations and their backward nodes. ``torch.compile``
cannot fuse the project's unroll, which breaks its graph at ``torch.autograd.grad``; a step written functionally
(``torch.func.grad_and_value`` of the task's loss through ``functional_call``, then the rule's own ``step`` and
``p + update``: :func:`metaopt.inner.compiled.functional_step`) compiles whole, forward and backward. This script
measures that path on one network structure at a time; ``truncated_backprop``'s ``compile`` option trains through it.

For each ``--widths`` x ``--depths`` x ``--activations`` digits MLP, with the rule of ``--config`` (default the
shipped recipe's: ``tiny`` with the learned scheduler and orthogonalization), one truncation of ``--truncation``
steps from a fresh optimizee and the backward of its summed losses into the rule's weights, three ways:
``metaopt.inner.unroll.unroll`` (``higher``, what ``metaopt train`` runs), the functional step eagerly, and the same
step through ``torch.compile``. Prints one JSON line per structure: the largest relative difference of the
meta-gradient from ``higher``'s (the eager functional step is the same arithmetic; the compiled one rounds
differently), the first compiled call's seconds (tracing and compiling; inductor's on-disk cache makes a second
process faster: ``cold_cache`` is whether the cache directory was empty), and the best of ``--repeats`` alternating
rounds of each way with the ratio ``higher / compiled``; threads and load average.

    OMP_NUM_THREADS=1 python benchmarks/compiled_unroll.py [--widths 16 32] [--depths 1] [--activations tanh]
        [--truncation 50] [--repeats 3] [--dynamic] [--config configs/metaopt/family_v7.yaml] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import add_device_argument, machine, parse_device
from torch import Tensor

import envs
from envs.tooling.config import load_config
from metaopt.inner.compiled import functional_step
from metaopt.inner.unroll import start_episode, unroll
from metaopt.rules import LearnedRule, make_rule
from metaopt.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def functional_truncation(
    task: envs.Task, seed: int, rule: LearnedRule, steps: int
) -> tuple[Callable[..., tuple[list[Tensor], dict, Tensor]], Callable[[Callable], Tensor]]:
    """``(step, run)``: the functional inner step of a fresh optimizee, and a runner of ``steps`` of them.

    The step is :func:`metaopt.inner.compiled.functional_step`'s (what ``truncated_backprop``'s ``compile`` compiles).
    ``run(step_fn)`` returns the summed losses f(theta_t) .. f(theta_{t+T}) on the batches ``unroll`` uses (the
    learning rate 1 and no weight decay of meta-training's optimizers).
    """
    inner = start_episode(task, seed, rule)
    start = [p.detach().clone() for p in inner.model.parameters()]
    step, loss_of = functional_step(inner, rule, list(inner.model.parameters()))
    batches = [inner.take_batch() for _ in range(steps + 1)]

    def run(step_fn: Callable) -> Tensor:
        params, state = list(start), rule.join([rule.init_state(p) for p in start])
        losses = []
        for inputs, targets in batches[:steps]:
            params, state, loss = step_fn(params, state, inputs, targets)
            losses.append(loss)
        losses.append(loss_of(params, *batches[steps]))
        return torch.stack(losses).sum()

    return step, run


def higher_truncation(task: envs.Task, seed: int, rule: LearnedRule, steps: int) -> Tensor:
    """The summed losses of ``unroll`` (``higher``) from a fresh optimizee."""
    return unroll(start_episode(task, seed, rule), steps).losses.sum()


def timed_ways(
    task: envs.Task, rule: LearnedRule, steps: int, step: Callable, compiled_step: Callable
) -> dict[str, Callable[[], Tensor]]:
    """The three ways of one truncation from the optimizee of seed 1001."""
    return {
        "higher": lambda: higher_truncation(task, 1001, rule, steps),
        "functional": lambda: functional_truncation(task, 1001, rule, steps)[1](step),
        "compiled": lambda: functional_truncation(task, 1001, rule, steps)[1](compiled_step),
    }


def meta_gradient(loss: Tensor, weights: list[Tensor]) -> list[Tensor]:
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads)]


def largest_difference(a: list[Tensor], b: list[Tensor]) -> float:
    scale = max(float(y.abs().max()) for y in b) or 1.0
    return max(float((x - y).abs().max()) for x, y in zip(a, b)) / scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--depths", type=int, nargs="+", default=[1])
    parser.add_argument("--activations", nargs="+", default=["tanh"])
    parser.add_argument("--truncation", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="task and rule dtype")
    parser.add_argument("--dynamic", action="store_true", help="compile with dynamic shapes (one graph for all widths)")
    parser.add_argument("--config", default="configs/metaopt/family_v7.yaml", help="the rule of this config")
    add_device_argument(parser, default="cpu")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    cfg = load_config(TrainConfig, str(ROOT / args.config), [f"device={device}"])
    torch.manual_seed(cfg.seed)
    dtype = getattr(torch, args.dtype)
    rule = make_rule(cfg.rule.name, cfg.rule_config()).to(device=device, dtype=dtype)
    weights = [w for w in rule.parameters() if w.requires_grad]
    # one compiled entry per structure and per requires_grad pattern of the inputs (the first step's state is a
    # constant, the later ones are on the meta-graph): more than dynamo's default 8 for a few structures
    torch._dynamo.config.cache_size_limit = 64
    cache = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_" + os.environ.get("USER", "root")))
    for depth in args.depths:
        for activation in args.activations:
            for width in args.widths:
                task = envs.make_task(
                    "digits_mlp", width=width, depth=depth, activation=activation, device=device, dtype=dtype
                )
                cold = not cache.exists() or not any(cache.iterdir())
                reference = meta_gradient(higher_truncation(task, 1000, rule, args.truncation), weights)
                step, run = functional_truncation(task, 1000, rule, args.truncation)
                eager = meta_gradient(run(step), weights)
                compiled_step = torch.compile(step, dynamic=True if args.dynamic else None)
                started = time.perf_counter()
                compiled = meta_gradient(run(compiled_step), weights)
                compile_seconds = time.perf_counter() - started
                ways = timed_ways(task, rule, args.truncation, step, compiled_step)
                best = dict.fromkeys(ways, math.inf)
                load_before = [round(x, 2) for x in os.getloadavg()]
                for _ in range(args.repeats):  # alternating, so the machine's load hits every way alike
                    for name, way in ways.items():
                        started = time.perf_counter()
                        meta_gradient(way(), weights)
                        best[name] = min(best[name], time.perf_counter() - started)
                print(json.dumps({
                    "benchmark": "compiled_unroll", "rule": cfg.rule.name, "width": width, "depth": depth,
                    "activation": activation, "truncation": args.truncation, "dynamic": args.dynamic,
                    "dtype": args.dtype, "device": str(device),
                    "functional_vs_higher": largest_difference(eager, reference),
                    "compiled_vs_higher": largest_difference(compiled, reference),
                    "first_compiled_call_s": round(compile_seconds, 2), "cold_cache": cold,
                    **{f"{name}_ms": round(1e3 * seconds, 1) for name, seconds in best.items()},
                    "higher_over_compiled": round(best["higher"] / best["compiled"], 2),
                    "threads": machine()["threads"], "load_average_before": load_before,
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
