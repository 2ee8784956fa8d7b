"""The step of ``family-v3`` with its Newton-Schulz factor reused (``ns_reuse.py``) against Adam's, 3-layer MLPs.

    OMP_NUM_THREADS=1 python scripts/prototypes/ns_reuse_speed.py

Each optimizer steps repeatedly on one fixed gradient (16 steps after 3 of warm-up), the optimizers alternating in 3
rounds, the best kept; prints the step over ``torch.optim.Adam(foreach=True)``'s per width and ``every``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from ns_reuse import LearnedNSReuse  # noqa: E402

from metaopt import LearnedOptimizer  # noqa: E402


def model(width: int) -> nn.Module:
    """``64 -> width -> width -> 10``."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


def timed(opt: torch.optim.Optimizer, net: nn.Module, steps: int = 16) -> float:
    """Milliseconds per ``step()`` on one gradient."""
    generator = torch.Generator().manual_seed(1)
    inputs, targets = torch.randn(128, 64, generator=generator), torch.randint(0, 10, (128,), generator=generator)
    opt.zero_grad()
    nn.functional.cross_entropy(net(inputs), targets).backward()
    for _ in range(3):
        opt.step()
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    """Widths 69, 280 and 963 (10k, 100k, 1M parameters), the shipped options and groups of 64 on the Gram matrix."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    for width, options in ((69, None), (280, None), (963, None), (963, {"ns_block": 64, "ns_method": "gram"})):
        arms = {"family-v3": 0, "every 1": 1, "every 4": 4, "every 8": 8}
        best = {name: float("inf") for name in ["adam", *arms]}
        for _ in range(3):
            net = model(width)
            best["adam"] = min(best["adam"], timed(torch.optim.Adam(net.parameters(), foreach=True), net))
            for name, every in arms.items():
                net = model(width)
                if every:
                    opt = LearnedNSReuse(net.parameters(), checkpoint="family-v3", options=options, every=every)
                else:
                    opt = LearnedOptimizer(net.parameters(), checkpoint="family-v3", options=options)
                best[name] = min(best[name], timed(opt, net))
        params = sum(p.numel() for p in model(width).parameters())
        ratios = ", ".join(f"{name} {best[name] / best['adam']:.1f}x" for name in arms)
        print(f"{params:,} parameters, options {options}: Adam {best['adam']:.2f} ms; {ratios}; "
              f"load {os.getloadavg()[0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
