"""Batched versus one-at-a-time: the full sweep of a comparison config, both ways, in one process.

The same work each way: every grid learning rate on every tuning seed, the choice, then every evaluation seed at the
chosen rate, for every (task, optimizer) of the config. Two measurements:

- ``compute``: the runs alone (``run_batched`` per chunk against ``run_plain`` per run), no files;
- ``harness``: the whole ``sweep`` of ``metaopt compare`` into a fresh run directory, records included (the plain
  path writes one record per run, the batched path one batch of records per chunk).

One-time costs (imports, the first vmap call, loading data) are paid by a warm-up before anything is timed. Peak
memory is the process's maximum resident set size after each phase (plain runs first, so a rise after the batched
phase is the batched path's own). Prints one JSON line.

    python benchmarks/compare_sweep.py [--config compare/quadratic.yaml] [--threads 1] [--device cpu|cuda|auto]
        [key=value ...]

On CUDA the peak memory is also reported as ``torch.cuda.max_memory_allocated`` per phase.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import add_device_argument, parse_device, peak_cuda_mb, sync

from envs.tooling.config import load_config
from envs.tooling.runs import Run
from metaopt.compare import CompareConfig, RunResult, RunSpec, make_plan, run_batched, run_plain, sweep
from metaopt.compare.harness import Contender, Plan
from metaopt.compare.stats import choose_lr, final_loss


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_all(plan: Plan, label: str, contender: Contender, specs: list[RunSpec], batched: bool) -> list[RunResult]:
    task, steps = plan.tasks[label], plan.cfg.tasks[label].steps
    if batched:
        assert contender.functional is not None, "the benchmark compares the baselines, which all have twins"
        return run_batched(task, specs, steps, contender.functional)
    return [run_plain(task, spec, steps, contender.name, contender.options) for spec in specs]


def compute_sweep(plan: Plan, batched: bool) -> dict[tuple[str, str], tuple[float | None, np.ndarray]]:
    """Every run of the config, batched or one at a time: the chosen rate and mean eval curve per (task, optimizer)."""
    cfg = plan.cfg
    outcome = {}
    for label in plan.tasks:
        for contender in plan.contenders:
            tuning = [RunSpec(seed, lr) for lr in cfg.lr_grid for seed in cfg.tuning_seed_list]
            tune = run_all(plan, label, contender, tuning, batched)
            finals = np.array([final_loss(r.losses, cfg.final_window) for r in tune]).reshape(len(cfg.lr_grid), -1)
            diverged = np.array([r.diverged for r in tune]).reshape(len(cfg.lr_grid), -1)
            lr = choose_lr(cfg.lr_grid, finals, diverged).chosen
            curve = np.empty(0)
            if lr is not None:
                evaluation = run_all(plan, label, contender, [RunSpec(s, lr) for s in cfg.eval_seed_list], batched)
                ok = [r.losses for r in evaluation if not r.diverged]
                curve = np.mean(ok, axis=0) if ok else curve
            outcome[(label, contender.name)] = (lr, curve)
    return outcome


def harness_sweep(cfg: CompareConfig, batched: bool, root: Path, device: torch.device) -> float:
    cfg = dataclasses.replace(cfg, batched=batched, out=str(root / ("batched" if batched else "plain")))
    plan = make_plan(cfg)
    run = Run.create(cfg.name, cfg, cfg.out)
    sync(device)
    started = time.perf_counter()
    sweep(plan, run, progress=False)
    sync(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="compare/quadratic.yaml")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    add_device_argument(parser, default="cpu")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(CompareConfig, args.config, [*args.overrides, "timing=false", f"device={device}"])
    plan = make_plan(cfg)
    baseline = peak_rss_mb()

    for task in plan.tasks.values():  # warm-up: imports, the first vmap call, data
        contender = plan.contenders[0]
        assert contender.functional is not None
        run_batched(task, [RunSpec(cfg.tuning_seed_offset, cfg.lr_grid[0])] * 2, 2, contender.functional)
        run_plain(task, RunSpec(cfg.tuning_seed_offset, cfg.lr_grid[0]), 2, contender.name)

    sync(device)
    started = time.perf_counter()
    plain = compute_sweep(plan, batched=False)
    sync(device)
    plain_s = time.perf_counter() - started
    rss_plain, cuda_plain = peak_rss_mb(), peak_cuda_mb(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    batched = compute_sweep(plan, batched=True)
    sync(device)
    batched_s = time.perf_counter() - started
    rss_batched, cuda_batched = peak_rss_mb(), peak_cuda_mb(device)

    same_choices = all(plain[k][0] == batched[k][0] for k in plain)
    differences = {
        k: float(np.max(np.abs(batched[k][1] - plain[k][1]) / np.abs(plain[k][1]))) for k in plain if plain[k][1].size
    }
    worst = max(differences, key=differences.__getitem__, default=None)
    with tempfile.TemporaryDirectory() as tmp:
        harness_plain_s = harness_sweep(cfg, batched=False, root=Path(tmp), device=device)
        harness_batched_s = harness_sweep(cfg, batched=True, root=Path(tmp), device=device)

    units = plan.total_units
    steps = sum(
        cfg.tasks[label].steps * (len(cfg.lr_grid) * cfg.tuning_seeds + cfg.eval_seeds) * len(plan.contenders)
        for label in plan.tasks
    )
    print(
        json.dumps(
            {
                "benchmark": "compare_sweep",
                "config": args.config,
                "overrides": args.overrides,
                "runs": units,
                "run_steps": steps,
                "device": str(device),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "compute_plain_s": round(plain_s, 3),
                "compute_batched_s": round(batched_s, 3),
                "compute_ratio": round(plain_s / batched_s, 2),
                "harness_plain_s": round(harness_plain_s, 3),
                "harness_batched_s": round(harness_batched_s, 3),
                "harness_ratio": round(harness_plain_s / harness_batched_s, 2),
                "batched_us_per_run_step": round(batched_s / steps * 1e6, 2),
                "plain_us_per_run_step": round(plain_s / steps * 1e6, 2),
                "rss_mb_before": round(baseline, 1),
                "peak_rss_mb_after_plain": round(rss_plain, 1),
                "peak_rss_mb_after_batched": round(rss_batched, 1),
                "peak_cuda_mb_plain": cuda_plain,
                "peak_cuda_mb_batched": cuda_batched,
                "same_lr_choices": same_choices,
                "max_rel_diff_mean_eval_curve": differences.get(worst, 0.0) if worst else 0.0,
                "max_rel_diff_at": "/".join(worst) if worst else None,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
