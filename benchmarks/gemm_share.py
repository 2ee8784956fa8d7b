"""Share of the machine's GEMM peak that the batched DSS paths reach, for each ParamSpace strategy.

The peak is many short square products (``--peak-products`` of side ``--peak-size``, default 32 of 256) at the same
thread count and dtype, timed right before every timed variant in the same alternating rounds (a busy machine slows
both alike, and one long product is no longer one sample that a neighbour's burst can shrink or inflate); the best
sample is the peak. The share is flagged as meaningless (``share_meaningful: false`` and ``share_warning`` saying
why, also on stderr) when the 1-minute load average exceeds the number of cores, when the median peak sample is
more than 1.5 times the best (the machine's speed changed during the rounds), or when a share exceeds 1. For each task
(default ``digits_mlp`` and ``poly_quadratic``) and strategy (``loop``, ``vmap``, ``bmm``, and ``bmm`` with autograd
over its batched forward instead of its hand-written backward), on ``--models`` perturbed copies of one model and one
training batch, it times, alternating the variants in one process (best of ``--repeats`` rounds):

* ``loss``: ``ParamSpace.batched_loss``;
* ``value_and_grad``: ``ParamSpace.batched_value_and_grad`` (the gradient part of a bead step);
* ``bead_step``: the inner update of :func:`geodesics.beads.train_beads` on the whole stack (value and gradient,
  ``nan_to_num``, the functional Adam update of the active rows, written back), without its evaluation checks.

FLOPs counted: only matmuls, ``2 * m * n * k`` each; forward = one product per linear layer, backward = every
layer's weight gradient and every layer's input gradient but the first's. Bias additions, activations, the
criterion and the optimizer are elementwise and not counted, so the share is that of useful GEMM work. Prints one
JSON line per task and variant (FLOP/s and share of the peak for the three measurements, the speed-up over the
loop), with the thread count and the machine's load average.

    python benchmarks/gemm_share.py [--device cpu|cuda|auto] [--tasks digits_mlp poly_quadratic] [--models 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from common import add_device_argument, emit, machine, parse_device, sync
from torch import Tensor

import envs
from envs.task import Batch
from geodesics import ParamSpace
from geodesics.batched_mlp import MLPPlan, mlp_plan
from geodesics.beads import require_batched_optimizer

VARIANTS = ("loop", "vmap", "bmm", "bmm_autograd")
"""Strategies timed; ``bmm_autograd`` is ``bmm``'s batched forward with autograd in place of its written backward."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_argument(parser)
    parser.add_argument("--tasks", nargs="+", default=["digits_mlp", "poly_quadratic"])
    parser.add_argument("--models", type=int, default=64, help="models in the batch (M)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds; the best of them is kept")
    parser.add_argument("--calls", type=int, default=5, help="calls per timing")
    parser.add_argument("--peak-size", type=int, default=256, help="side of the short square products of the peak")
    parser.add_argument("--peak-products", type=int, default=32, help="products per peak sample")
    args = parser.parse_args()
    for key in ("models", "repeats", "calls", "peak_size", "peak_products"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    device = parse_device(parser, args.device)
    for name in args.tasks:
        task = envs.make_task(name, device=device)
        rows = measure(task, args.models, args.repeats, args.calls, device, args.peak_size, args.peak_products)
        for row in rows:
            if row["share_warning"]:
                print(f"gemm_share: {task.name} {row['variant']}: {row['share_warning']}", file=sys.stderr)
            emit({**row, **machine()})


def measure(
    task: envs.Task,
    models: int,
    repeats: int,
    calls: int,
    device: torch.device,
    peak_size: int = 256,
    peak_products: int = 32,
) -> list[dict[str, object]]:
    """Best seconds per call of the three measurements for every variant, timed alternately, with FLOP/s and share.

    The GEMM peak (``peak_products`` products of side ``peak_size``) is timed before every measurement in the same
    rounds, so that a busy machine slows both alike; whether the share means anything is judged from the load and
    the spread of the peak samples (see the module docstring).
    """
    spaces = {v: ParamSpace(task, strategy="bmm" if v.startswith("bmm") else v) for v in VARIANTS}
    plan = mlp_plan(task.init_model(0), spaces["loop"].names, task)
    base = spaces["loop"].flatten(task.init_model(0))
    noise = torch.randn(models, base.numel(), generator=torch.Generator().manual_seed(0)).to(base)
    thetas = base + 0.1 * noise
    batch = next(task.batches(0))
    work = {v: _work(spaces[v], plan, thetas, batch, autograd=v == "bmm_autograd") for v in VARIANTS}
    a, b = (torch.randn(peak_size, peak_size, device=device, dtype=task.dtype) for _ in range(2))
    out = torch.empty_like(a)

    def peak_sample() -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(peak_products):
            torch.mm(a, b, out=out)
        sync(device)
        return (time.perf_counter() - start) / peak_products

    best = {(v, k): float("inf") for v, fns in work.items() for k in fns}
    for fns in work.values():
        for fn in fns.values():
            fn()  # warm up
    peak_samples = [peak_sample()]
    for _ in range(repeats):
        for variant, fns in work.items():
            for key, fn in fns.items():
                peak_samples.append(peak_sample())
                sync(device)
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                sync(device)
                best[variant, key] = min(best[variant, key], (time.perf_counter() - start) / calls)
    examples = int(batch[0].reshape(-1, batch[0].shape[-1]).shape[0])
    flops = {"loss": plan.matmul_flops(examples, backward=False) * models}
    flops["value_and_grad"] = flops["bead_step"] = plan.matmul_flops(examples, backward=True) * models
    peak = 2 * peak_size**3 / min(peak_samples[1:]) / 1e9
    spread = statistics.median(peak_samples[1:]) / min(peak_samples[1:])
    load = os.getloadavg()
    reasons = []
    if load[0] > (os.cpu_count() or 1):
        reasons.append(f"the load average {load[0]:.2f} exceeds the {os.cpu_count()} cores")
    if spread > 1.5:
        reasons.append(f"the median peak sample is {spread:.2f} times the best (the machine's speed changed)")
    rows: list[dict[str, object]] = []
    for variant in VARIANTS:
        row: dict[str, object] = {"benchmark": "gemm_share", "task": task.name, "device": str(device),
                                  "variant": variant, "models": models, "examples": examples,
                                  "matmul_peak_gflops": peak, "peak_spread": round(spread, 3),
                                  "load_average": load}  # fmt: skip
        over = []
        for key in work[variant]:
            gflops = flops[key] / best[variant, key] / 1e9
            row[f"{key}_seconds"] = best[variant, key]
            row[f"{key}_gflops"] = gflops
            row[f"{key}_share_of_peak"] = gflops / peak
            row[f"{key}_speedup_over_loop"] = best["loop", key] / best[variant, key]
            if gflops > peak:
                over.append(f"{key} reaches {gflops / peak:.2f} of the peak")
        warning = "; ".join(reasons + over)
        row["share_meaningful"] = not warning
        row["share_warning"] = f"share not meaningful: {warning}" if warning else ""
        rows.append(row)
    return rows


def _work(
    space: ParamSpace, plan: MLPPlan, thetas: Tensor, batch: Batch, autograd: bool
) -> dict[str, Callable[[], object]]:
    """The three timed calls on one space."""
    if autograd:

        def value_and_grad(x: Tensor, b: Batch) -> tuple[Tensor, Tensor]:
            return plan.values_and_grads_autograd(space.task, space.check(x, batched=True), b)

    else:
        value_and_grad = space.batched_value_and_grad
    rule = require_batched_optimizer("adam")
    beads = thetas.clone()
    state = rule.init({"theta": beads})
    count = beads.shape[0]
    rates = torch.full((count,), 1e-3, dtype=torch.float64, device=beads.device)
    active = torch.arange(count, device=beads.device)
    step = [0]

    def bead_step() -> None:
        # the body of train_beads' loop, all beads active, without the periodic evaluation check
        step[0] += 1
        _, grads = value_and_grad(beads[active], batch)
        grads = torch.nan_to_num(grads, nan=0.0, posinf=0.0, neginf=0.0)
        rows = {key: {"theta": buffers["theta"][active]} for key, buffers in state.items()}
        moved, rows = rule.update({"theta": beads[active]}, {"theta": grads}, rows, rates[active], step[0])
        beads[active] = moved["theta"]
        for key, buffers in rows.items():
            state[key]["theta"][active] = buffers["theta"]

    return {
        "loss": lambda: space.batched_loss(thetas, batch),
        "value_and_grad": lambda: value_and_grad(thetas, batch),
        "bead_step": bead_step,
    }


if __name__ == "__main__":
    main()
