"""Newton-Schulz orthogonalization: the Gram form against the standard iteration, at several matrix shapes.

``envs.training.muon.orthogonalize`` computes Muon's five quintic iterations either on the ``m x n`` matrix itself
(``standard``: ``10 m^2 n + 5 m^3`` multiply-adds, ``m <= n``) or on its ``m x m`` Gram matrix (``gram``:
``2 m^2 n + 17 m^3``); ``auto`` picks ``gram`` where ``gram_pays`` says so. For each shape (``R x m x n`` is a batch
of ``R`` matrices, as ``ns_block`` cuts a wide matrix into groups of rows) this times both methods alternating in one
process (best of ``--repeats`` rounds of ``--calls`` calls each), and prints one JSON line: both times, their ratio,
the method ``auto`` takes, each method's error against the float64 standard iteration (relative Frobenius norm), the
multiply-adds both methods count, the thread count and the machine's load average before and after.

The default shapes are the blocks the size sweep of ``benchmarks/learned_dropin_speed.py`` meets (the ``w x w``
hidden matrix of a ``64 -> w -> w -> 10`` MLP at 100k, 1M and 4M parameters cut into groups of 256 and of 64 rows)
and a few around ``auto``'s thresholds.

    OMP_NUM_THREADS=1 python benchmarks/orthogonalize_speed.py [--shapes 4x256x965 128x256 ...] [--dtype float32]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from common import add_device_argument, emit, machine, parse_device, sync

from envs.training.muon import gram_pays, orthogonalize

DEFAULT_SHAPES = ("256x280", "4x256x965", "16x64x965", "8x256x1965", "31x64x1965", "128x256", "128x512", "64x256",
                  "965x965")  # fmt: skip
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def parse_shape(text: str) -> tuple[int, ...]:
    """``"4x256x965"`` -> ``(4, 256, 965)``: a matrix or a batch of matrices, every side at least 1."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is m x n or R x m x n, e.g. 4x256x965; got {text!r}") from None
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"a shape is m x n or R x m x n with sides >= 1; got {text!r}")
    return shape


def multiply_adds(shape: tuple[int, ...], steps: int) -> dict[str, int]:
    """Multiply-adds of the products of both methods (``m <= n`` after the transpose), for ``steps`` iterations."""
    batch = shape[0] if len(shape) == 3 else 1
    m, n = sorted(shape[-2:])
    standard = steps * (2 * m * m * n + m**3)
    gram = 2 * m * m * n + steps * m**3 + (steps - 1) * 3 * m**3  # A_0 and Q x; per step A^2, then Q and A updates
    return {"standard": batch * standard, "gram": batch * gram}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_argument(parser, default="cpu")
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=[parse_shape(s) for s in DEFAULT_SHAPES])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--steps", type=int, default=5, help="Newton-Schulz iterations")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds; the best is kept")
    parser.add_argument("--calls", type=int, default=3, help="calls per timing")
    args = parser.parse_args()
    for key in ("steps", "repeats", "calls"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be >= 1, got {getattr(args, key)}")
    device = parse_device(parser, args.device)
    dtype = DTYPES[args.dtype]
    for shape in args.shapes:
        emit({**measure(shape, dtype, args.steps, args.repeats, args.calls, device), **machine()})


def measure(
    shape: tuple[int, ...], dtype: torch.dtype, steps: int, repeats: int, calls: int, device: torch.device
) -> dict[str, object]:
    """Best seconds per call of both methods on one random matrix (or batch), alternating, with their errors."""
    generator = torch.Generator().manual_seed(0)
    exact_input = torch.randn(*shape, generator=generator, dtype=torch.float64).to(device)
    matrix = exact_input.to(dtype)
    exact = orthogonalize(exact_input, steps, method="standard")
    load_before = os.getloadavg()
    best = {method: math.inf for method in ("standard", "gram")}
    errors = {}
    for method in best:
        got = orthogonalize(matrix, steps, method=method)  # warm up
        errors[method] = float((got.double() - exact).norm() / exact.norm())
    for _ in range(repeats):
        for method in best:
            sync(device)
            start = time.perf_counter()
            for _ in range(calls):
                orthogonalize(matrix, steps, method=method)
            sync(device)
            best[method] = min(best[method], (time.perf_counter() - start) / calls)
    wide = shape[-2] <= shape[-1]
    rows = matrix if wide else matrix.mT
    return {
        "benchmark": "orthogonalize_speed", "shape": "x".join(map(str, shape)), "dtype": str(dtype).split(".")[-1],
        "device": str(device), "steps": steps,
        "standard_ms": round(best["standard"] * 1e3, 3), "gram_ms": round(best["gram"] * 1e3, 3),
        "standard_over_gram": round(best["standard"] / best["gram"], 3),
        "auto_takes": "gram" if gram_pays(rows) else "standard",
        "standard_error": errors["standard"], "gram_error": errors["gram"],
        "multiply_adds": multiply_adds(shape, steps),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
    }  # fmt: skip


if __name__ == "__main__":
    main()
