"""Curve evaluation throughput: the batched engine versus one model at a time.

Work: 8 segments between independently initialised models, 64 points per segment (512 models), evaluation loss on
the task's fixed evaluation set. One-at-a-time is the straightforward way: copy each interpolated vector into a model
and run its forward pass. Prints one JSON line per task with models per second for both, their ratio, and the
engine's achieved GFLOP/s as a fraction of this device's measured matmul peak.

    python benchmarks/curve_throughput.py [--device cpu|cuda|auto] [--tasks digits_mlp digits_cnn] [--strategy auto]

``--strategy`` picks the ParamSpace strategy of the engine (``bmm`` only for the MLP tasks; ``benchmarks/gemm_share.py``
compares them all, with gradients and bead steps).
"""

from __future__ import annotations

import argparse

import torch
from common import add_device_argument, best_time, emit, forward_flops, machine, matmul_peak_gflops, parse_device
from torch.nn.utils import vector_to_parameters

import envs
from geodesics import ParamSpace
from geodesics.curve import evaluate_segments
from geodesics.space import STRATEGIES


def one_at_a_time(task: envs.Task, model: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    inputs, targets = task.eval_data()
    out = []
    with torch.no_grad():
        for theta in points:
            vector_to_parameters(theta, model.parameters())
            out.append(task.criterion(model(inputs), targets))
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_argument(parser)
    parser.add_argument("--tasks", nargs="+", default=["digits_mlp", "digits_cnn"])
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument("--strategy", default="auto", choices=STRATEGIES, help="ParamSpace strategy of the engine")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    peak = matmul_peak_gflops(device)
    for name in args.tasks:
        emit(measure(name, device, peak, args.segments, args.points, args.strategy))


def measure(
    name: str, device: torch.device, peak: float, segments: int, num_points: int, strategy: str = "auto"
) -> dict[str, object]:
    task = envs.make_task(name, device=device)
    space = ParamSpace(task, strategy=strategy)
    ends = torch.stack([space.flatten(task.init_model(s)) for s in range(segments + 1)])
    ts = torch.linspace(0, 1, num_points, device=device, dtype=torch.float64).expand(segments, -1)
    points = torch.lerp(ends[:-1, None], ends[1:, None], ts.to(ends.dtype)[..., None]).reshape(-1, ends.shape[1])
    models = points.shape[0]
    batched = best_time(lambda: evaluate_segments(space, ends[:-1], ends[1:], ts), device)
    model = task.init_model(0)
    single = best_time(lambda: one_at_a_time(task, model, points), device, repeats=1)
    difference = evaluate_segments(space, ends[:-1], ends[1:], ts).reshape(-1) - one_at_a_time(task, model, points)
    flops = forward_flops(model, task.eval_data()[0]) * models
    return {
        "benchmark": "curve_throughput", "task": name, "device": str(device), "models": models,
        "eval_examples": int(task.eval_data()[1].shape[0]),
        "strategy": space.strategy,
        "batched_models_per_s": models / batched, "one_at_a_time_models_per_s": models / single,
        "ratio": single / batched, "batched_gflops": flops / batched / 1e9, "matmul_peak_gflops": peak,
        "fraction_of_peak": flops / batched / 1e9 / peak, "max_abs_difference": float(difference.abs().max()),
        **machine(),
    }  # fmt: skip


if __name__ == "__main__":
    main()
