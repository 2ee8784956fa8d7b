"""Shared helpers of the benchmark scripts: timing, matmul peak, FLOP counts, machine description."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from envs.devices import resolve_device


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """The ``--device cpu|cuda|cuda:N|auto`` option every benchmark takes."""
    parser.add_argument(
        "--device",
        default=default,
        help=f"cpu, cuda, cuda:N or auto (CUDA when available); default {default}. "
        "A CUDA device on a machine without CUDA exits with status 2.",
    )


def parse_device(parser: argparse.ArgumentParser, value: str) -> torch.device:
    """``resolve_device``, with an unknown or unavailable device reported as a usage error (exit status 2)."""
    try:
        return resolve_device(value)
    except ValueError as error:
        parser.error(str(error))


def peak_cuda_mb(device: torch.device) -> float | None:
    """``torch.cuda.max_memory_allocated`` in MiB on a CUDA device, else None."""
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], Any], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048) -> float:
    """Measured dense matmul throughput of this device (GFLOP/s): the reference for 'fraction of peak'."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = best_time(lambda: a @ b, device, repeats=5)
    return 2 * size**3 / seconds / 1e9


def forward_flops(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    """FLOPs of one forward pass (torch's FLOP counter: matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(inputs)
    return int(counter.get_total_flops())


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def emit(result: dict[str, Any]) -> None:
    """Print one machine-readable JSON line."""
    print(json.dumps(result, sort_keys=True))
