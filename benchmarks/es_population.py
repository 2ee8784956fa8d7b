"""ES population throughput: the loop population (one particle after another) against vmap (all 2 K together).

For each rule of ``--rules``, the ES (or PES) estimator with ``population=loop`` and with ``population=vmap`` runs
``--meta-steps`` estimates on a meta-batch of ``--optimizees`` (default 1) optimizees of ``--task``; with more than
one, also ``population=stack`` (the populations of all the meta-batch's optimizees in one vmap call a step, where
``vmap`` runs each optimizee's alone) (K = ``--pairs`` antithetic pairs, truncations of
``--truncation`` steps; no meta-update, so every round sees the same rule), the variants alternating in
``--repeats`` rounds in one process after a warm-up round, the best round of each kept. Prints one JSON line per
rule: the population inner steps per second of each variant (the ``2 K`` particles' steps; each estimate also runs
the unperturbed optimizee, one more run in the timed seconds, as ``metaopt train`` pays it), the ratio vmap/loop of
the throughputs (above 1: vmap is faster; with several optimizees also stack over vmap), how far
apart the two populations' meta-losses are on the first estimate
(the rounding of batched kernels, amplified by the inner steps), the thread count and the machine's load average.

    OMP_NUM_THREADS=1 python benchmarks/es_population.py [--task digits_mlp] [--rules lstm mlp] [--pairs 8]
        [--truncation 20] [--meta-steps 2] [--optimizees 1] [--estimator es|pes] [--repeats 2] [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from common import add_device_argument, emit, machine, parse_device, peak_cuda_mb, sync

import envs
from metaopt import optimizee_loss, start_episode
from metaopt.outer import ESConfig, EstimatorSetup, PersistentES, TruncatedES
from metaopt.rules import LearnedRule, make_rule

POPULATIONS = ("loop", "vmap")
VARIANTS = ("loop", "vmap", "stack")
ESTIMATORS = {"es": TruncatedES, "pes": PersistentES}


def estimate_seconds(
    task: envs.Task, rule: LearnedRule, variant: str, args: argparse.Namespace, device: torch.device
) -> tuple[float, torch.Tensor]:
    """Seconds of ``args.meta_steps`` estimates from fresh optimizees, and the first estimate's particle losses."""
    config = ESConfig(pairs=args.pairs, population=variant)
    estimator = ESTIMATORS[args.estimator](config, EstimatorSetup(args.truncation, optimizee_loss, seed=0))
    inners = [start_episode(task, seed, rule) for seed in range(args.optimizees)]
    first = None
    sync(device)
    started = time.perf_counter()
    for meta_step in range(args.meta_steps):
        estimator.estimate(rule, inners, meta_step=meta_step)
        if first is None:
            assert estimator.population_losses is not None
            first = estimator.population_losses
    sync(device)
    assert first is not None
    return time.perf_counter() - started, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="digits_mlp")
    parser.add_argument("--rules", nargs="+", default=["lstm", "mlp"])
    parser.add_argument("--pairs", type=int, default=8, help="K antithetic pairs (2 K particles)")
    parser.add_argument("--truncation", type=int, default=20, help="inner steps per estimate")
    parser.add_argument("--meta-steps", type=int, default=2, help="estimates per timed round")
    parser.add_argument(
        "--optimizees",
        type=int,
        default=1,
        help="optimizees of the task per meta-batch (more than 1: population=stack too)",
    )
    parser.add_argument("--estimator", choices=sorted(ESTIMATORS), default="es")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds (best kept), after one warm-up round")
    add_device_argument(parser, default="cpu")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    task = envs.make_task(args.task, device=device)
    population_steps = 2 * args.pairs * args.truncation * args.meta_steps * args.optimizees
    variants = VARIANTS if args.optimizees > 1 else POPULATIONS
    for rule_name in args.rules:
        torch.manual_seed(0)
        rule = make_rule(rule_name, {}).to(device)
        best = dict.fromkeys(variants, float("inf"))
        first: dict[str, torch.Tensor] = {}
        for round_index in range(args.repeats + 1):  # round 0 warms up
            for variant in variants:  # alternate, so a change in the machine's load hits every variant alike
                seconds, first[variant] = estimate_seconds(task, rule, variant, args, device)
                if round_index:
                    best[variant] = min(best[variant], seconds)
        rates = {variant: population_steps / best[variant] for variant in variants}
        gap = ((first["vmap"] - first["loop"]).abs() / first["loop"].abs()).max()
        together = {}
        if args.optimizees > 1:
            together = {"stack_over_vmap": round(rates["stack"] / rates["vmap"], 2)}
        emit({
            "benchmark": "es_population", "task": args.task, "params": task.num_params, "rule": rule_name,
            "estimator": args.estimator, "pairs": args.pairs, "truncation": args.truncation,
            "meta_steps": args.meta_steps, "optimizees": args.optimizees, "device": str(device),
            **{f"{p}_seconds": round(best[p], 3) for p in variants},
            **{f"{p}_population_inner_steps_per_s": round(rates[p], 1) for p in variants},
            "vmap_over_loop": round(rates["vmap"] / rates["loop"], 2), **together,
            "max_relative_meta_loss_gap": float(gap), "load_average": [round(x, 2) for x in os.getloadavg()],
            "peak_cuda_mb": peak_cuda_mb(device), **machine(),
        })  # fmt: skip


if __name__ == "__main__":
    main()
