"""Meta-training throughput of the learned optimizer: batched versus per-tensor LSTM calls; rules and estimators.

Without ``--rules``/``--estimators``: times full meta-training episodes on ``digits_mlp`` (K inner steps in
truncations of T, the meta-loss backpropagated after each truncation, as ``metaopt train`` does) with the library's
optimizer and with a reference twin that calls the LSTM once per parameter tensor, and measures the memory an unroll
keeps for its backward pass (the tensors saved by autograd, counted once per storage) for truncations of T and for
the untruncated K. Prints one JSON object.

With ``--rules lstm mlp`` and/or ``--estimators backprop es pes``: meta-trains each rule (untrained, default sizes)
with each estimator of ``metaopt.outer`` for ``--steps / --truncation`` meta-steps on a meta-batch of
``--meta-batch`` episodes (the same seeds for every pair; a meta-Adam step after each estimate, as the training loop
does), alternating the pairs in ``--repeats`` rounds in one process and keeping each one's best round. Prints one
JSON object per pair: the optimizee inner steps per second across the meta-batch, and for ES/PES also the population
inner steps per second (each of the ``2 * pairs`` particles runs T steps per optimizee and truncation, plus the
unperturbed run); then one per estimator with the ratio of every rule to the first. Each carries the thread count
and the load average. On CUDA the device is synchronized around the timed episodes and the peak
``torch.cuda.max_memory_allocated`` is added.

With ``--configs configs/metaopt/family.yaml ...``: meta-trains as ``metaopt train`` does with each config (its
task family, sampling, start offsets, horizons and objective; ``--rules``, default ``mlp tiny``, replace its rule,
keeping its options when the names agree) for ``--episodes`` episodes, with ``truncated_backprop`` unrolling the
meta-batch one optimizee after another (``optimizees: loop``, before) and together (``stack``, after), alternating in
``--repeats`` rounds in one process and keeping each one's best round (validation, which both share, excluded). One
JSON line per config, rule and mode: the unrolled inner steps per second across the meta-batch (start offsets'
plain steps are timed but not counted), the thread count and the load average before and after; then the speedup;
then, for a config with start offsets, the seconds to build ``--offset-episodes`` meta-batches with their offsets
taken one optimizee after another (``loop``) and together (``stack``), in the same alternating rounds. ``--modes loop
stack compile`` adds the loop through compiled steps (``compile: true``): the tasks, rule and estimator of each case
are kept from round to round, as one run keeps them, so every structure compiles in the warm-up round
(``first_round_seconds``) and the timed rounds are a long run's steady state.

    OMP_NUM_THREADS=1 python benchmarks/learned_meta_speed.py [--task digits_mlp] [--option depth=4] [--episodes 3]
        [--rules lstm mlp] [--estimators backprop es pes] [--meta-batch 2] [--pairs 4] [--repeats 2]
        [--configs configs/metaopt/family.yaml configs/metaopt/family_v2.yaml] [--modes loop stack compile]
        [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import time
from typing import Any

import higher
import torch
from common import add_device_argument, machine, parse_device, peak_cuda_mb, sync
from torch import Tensor
from typing_extensions import override

import envs
from envs.tooling.config import load_config
from metaopt import CoordinateLSTM, DifferentiableLearnedOptimizer, LearnedOptimizer, optimizee_loss
from metaopt.inner import InnerState, start_episode, unroll
from metaopt.objectives import ObjectiveConfig, make_objective
from metaopt.outer import EstimatorSetup, make_estimator
from metaopt.rules import LearnedRule, make_rule
from metaopt.training.config import EstimatorChoice, RuleChoice, TrainConfig
from metaopt.training.schedule import FreshEpisodes

ESTIMATOR_NAMES = {
    "backprop": "truncated_backprop",
    "truncated_backprop": "truncated_backprop",
    "es": "es",
    "pes": "pes",
}
"""``--estimators`` names -> registered estimators."""


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


def meta_training_seconds(
    task: envs.Task,
    rule: LearnedRule,
    estimator: str,
    options: dict[str, Any],
    args: argparse.Namespace,
    device: torch.device,
) -> float:
    """Seconds of ``args.steps / args.truncation`` meta-steps (estimate + meta-Adam step) on the meta-batch."""
    setup = EstimatorSetup(args.truncation, make_objective(ObjectiveConfig()), seed=0)
    outer = make_estimator(estimator, options, setup)
    meta_opt = torch.optim.Adam(rule.parameters(), lr=1e-3)
    inners = [start_episode(task, seed, rule) for seed in range(args.meta_batch)]
    sync(device)
    started = time.perf_counter()
    for meta_step in range(args.steps // args.truncation):
        estimate = outer.estimate(rule, inners, meta_step=meta_step)
        meta_opt.zero_grad()
        for weight, grad in zip(rule.parameters(), estimate.grads):
            weight.grad = grad
        meta_opt.step()
    sync(device)
    return time.perf_counter() - started


def compare_rules(task: envs.Task, args: argparse.Namespace, device: torch.device) -> None:
    """Inner steps per second of every rule under every estimator, alternating; one JSON line per pair and ratio."""
    estimators = [ESTIMATOR_NAMES[name] for name in args.estimators]
    pairs = [(rule, estimator) for estimator in estimators for rule in args.rules]
    options = {name: ({} if name == "truncated_backprop" else {"pairs": args.pairs}) for name in estimators}
    rules = {}
    for name in args.rules:
        torch.manual_seed(0)
        rules[name] = make_rule(name, {}).to(device)
    initial = {name: {k: v.clone() for k, v in rule.state_dict().items()} for name, rule in rules.items()}
    best = dict.fromkeys(pairs, float("inf"))
    for round_index in range(args.repeats + 1):  # round 0 warms up
        for rule_name, estimator in pairs:  # alternate, so a change in the machine's load hits every pair alike
            rules[rule_name].load_state_dict(initial[rule_name])  # the same weights, so the same episodes
            seconds = meta_training_seconds(task, rules[rule_name], estimator, options[estimator], args, device)
            if round_index:
                best[rule_name, estimator] = min(best[rule_name, estimator], seconds)
    common = {"task": args.task, "params": task.num_params, "device": str(device), "threads": machine()["threads"],
              "load_average": [round(x, 2) for x in os.getloadavg()], "meta_batch": args.meta_batch,
              "truncation": args.truncation, "steps": args.steps}  # fmt: skip
    optimizee_steps = args.meta_batch * (args.steps // args.truncation) * args.truncation
    rates: dict[tuple[str, str], float] = {}
    for (rule_name, estimator), seconds in best.items():
        rates[rule_name, estimator] = optimizee_steps / seconds
        result = {"benchmark": "learned_meta_speed/rules", "rule": rule_name, "estimator": estimator, **common,
                  "seconds": round(seconds, 3), "inner_steps_per_s": round(optimizee_steps / seconds, 1)}  # fmt: skip
        if estimator != "truncated_backprop":
            population = optimizee_steps * (2 * args.pairs + 1)  # the particles and the unperturbed run
            result |= {"pairs": args.pairs, "population_inner_steps_per_s": round(population / seconds, 1)}
        result["peak_cuda_mb"] = peak_cuda_mb(device)
        print(json.dumps(result))
    reference = args.rules[0]
    for estimator in estimators:
        ratios = {f"{name}_over_{reference}": round(rates[name, estimator] / rates[reference, estimator], 2)
                  for name in args.rules[1:]}  # fmt: skip
        print(json.dumps({"benchmark": "learned_meta_speed/ratio", "estimator": estimator, **common, **ratios}))


def family_seconds(
    cfg: TrainConfig, initial: dict[str, Tensor], episodes: int, kept: dict[str, Any] | None = None
) -> tuple[float, int]:
    """Seconds of ``episodes`` meta-training episodes of ``cfg`` from the rule weights ``initial``; inner steps run.

    The loop of :class:`metaopt.training.loop.MetaTrainer` without its logs, checkpoints and validation: the schedule's
    optimizees (start offsets included, taken as the estimator takes them), one estimate and one clipped meta-Adam
    step per truncation. ``kept`` (a dict, empty at first) keeps the tasks, rule and estimator between calls, as one
    run keeps them: a compiling estimator compiles each structure once, not in every round.
    """
    device = torch.device(cfg.device)
    kept = {} if kept is None else kept
    if not kept:
        kept["tasks"] = [envs.make_task(t.name, device=device, **t.options) for t in cfg.tasks]
        kept["rule"] = make_rule(cfg.rule.name, cfg.rule_config()).to(device)
        setup = EstimatorSetup(cfg.truncation, make_objective(cfg.objective), cfg.second_order, cfg.seed)
        kept["estimator"] = make_estimator(cfg.estimator.name, cfg.estimator_config(), setup)
    tasks, rule, estimator = kept["tasks"], kept["rule"], kept["estimator"]
    rule.load_state_dict(initial)
    meta_opt = torch.optim.Adam(rule.parameters(), lr=cfg.meta_lr)
    fresh = FreshEpisodes(cfg, tasks)
    weights = list(rule.parameters())
    steps, meta_step = 0, 0
    sync(device)
    started = time.perf_counter()
    for episode in range(episodes):
        inners = fresh.inners(episode, rule, advance=estimator.advance)
        for _ in range(fresh.truncations):
            estimate = estimator.estimate(rule, inners, meta_step=meta_step)
            meta_step += 1
            steps += len(inners) * cfg.truncation
            for weight, grad in zip(weights, estimate.grads):
                weight.grad = grad
            if not math.isfinite(float(torch.nn.utils.clip_grad_norm_(weights, cfg.clip_grad_norm or math.inf))):
                break  # as the loop does: the episode's optimizees are dropped
            meta_opt.step()
    sync(device)
    return time.perf_counter() - started, steps


def offset_seconds(cfg: TrainConfig, initial: dict[str, Tensor], episodes: int) -> tuple[float, int]:
    """Seconds to build ``episodes`` meta-batches of ``cfg`` with their start offsets taken; plain steps taken.

    The offsets are taken as ``cfg``'s estimator takes them (``optimizees: loop``: one optimizee after another;
    ``stack``: together); building the optimizees, the same in both, is timed too.
    """
    device = torch.device(cfg.device)
    tasks = [envs.make_task(t.name, device=device, **t.options) for t in cfg.tasks]
    rule = make_rule(cfg.rule.name, cfg.rule_config()).to(device)
    rule.load_state_dict(initial)
    setup = EstimatorSetup(cfg.truncation, make_objective(cfg.objective), cfg.second_order, cfg.seed)
    estimator = make_estimator(cfg.estimator.name, cfg.estimator_config(), setup)
    fresh = FreshEpisodes(cfg, tasks)
    sync(device)
    started = time.perf_counter()
    steps = sum(
        inner.step for episode in range(episodes) for inner in fresh.inners(episode, rule, advance=estimator.advance)
    )
    sync(device)
    return time.perf_counter() - started, steps


def compare_stacking(args: argparse.Namespace, device: torch.device) -> None:
    """Inner steps per second of every config and rule, optimizees in a loop and stacked, alternating."""
    rules = args.rules or ["mlp", "tiny"]
    cases: dict[tuple[str, str, str], TrainConfig] = {}
    initial: dict[tuple[str, str], dict[str, Tensor]] = {}
    for path in args.configs:
        base = load_config(TrainConfig, path, [f"device={device}"])
        for rule_name in rules:
            options = base.rule.options if rule_name == base.rule.name else {}
            cfg = dataclasses.replace(base, rule=RuleChoice(rule_name, dict(options)))
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed)
                initial[path, rule_name] = make_rule(rule_name, cfg.rule_config()).state_dict()
            for mode in args.modes:
                options = {"optimizees": "loop", "compile": True} if mode == "compile" else {"optimizees": mode}
                estimator = EstimatorChoice("truncated_backprop", options)
                cases[path, rule_name, mode] = dataclasses.replace(cfg, estimator=estimator)
    load_before = [round(x, 2) for x in os.getloadavg()]
    best = dict.fromkeys(cases, (math.inf, 0))
    first = dict.fromkeys(cases, 0.0)
    offsets = dict.fromkeys(cases, (math.inf, 0))
    kept: dict[tuple[str, str, str], dict[str, Any]] = {key: {} for key in cases}
    for round_index in range(args.repeats + 1):  # round 0 warms up (and compiles)
        for key, cfg in cases.items():  # alternate, so a change in the machine's load hits every case alike
            seconds, steps = family_seconds(cfg, initial[key[:2]], args.episodes, kept[key])
            if not round_index:
                first[key] = seconds
            if round_index and seconds < best[key][0]:
                best[key] = (seconds, steps)
            if cfg.start_offset and key[2] != "compile":
                seconds, steps = offset_seconds(cfg, initial[key[:2]], args.offset_episodes)
                if round_index and seconds < offsets[key][0]:
                    offsets[key] = (seconds, steps)
    common = {"device": str(device), "threads": machine()["threads"], "episodes": args.episodes,
              "repeats": args.repeats, "load_average_before": load_before,
              "load_average_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    rates = {}
    for (path, rule_name, mode), (seconds, steps) in best.items():
        rates[path, rule_name, mode] = steps / seconds
        print(json.dumps({"benchmark": "learned_meta_speed/stacking", "config": path, "rule": rule_name,
                          "optimizees": mode, "meta_batch": cases[path, rule_name, mode].meta_batch,
                          "inner_steps": steps, "seconds": round(seconds, 3),
                          "inner_steps_per_s": round(steps / seconds, 1),
                          "first_round_seconds": round(first[path, rule_name, mode], 3), **common}))  # fmt: skip
    for path in args.configs:
        for rule_name in rules:
            speedups = {f"{mode}_over_loop": round(rates[path, rule_name, mode] / rates[path, rule_name, "loop"], 2)
                        for mode in args.modes if mode != "loop"}  # fmt: skip
            print(json.dumps({"benchmark": "learned_meta_speed/stacking_speedup", "config": path, "rule": rule_name,
                              **speedups, **common}))  # fmt: skip
            if "stack" not in args.modes:
                continue
            (loop, steps), (stack, _) = offsets[path, rule_name, "loop"], offsets[path, rule_name, "stack"]
            if steps:
                print(json.dumps({"benchmark": "learned_meta_speed/offsets", "config": path, "rule": rule_name,
                                  "offset_episodes": args.offset_episodes, "plain_steps": steps,
                                  "loop_seconds": round(loop, 3), "stack_seconds": round(stack, 3),
                                  "stack_over_loop": round(loop / stack, 2), **common}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits_mlp")
    parser.add_argument("--option", action="append", default=[], help="task option KEY=VALUE (repeatable)")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--truncation", type=int, default=20)
    parser.add_argument("--rules", nargs="+", help="compare these rules' meta-training throughput (e.g. lstm mlp)")
    parser.add_argument(
        "--estimators",
        nargs="+",
        choices=sorted(ESTIMATOR_NAMES),
        help="compare the rules under these estimators (e.g. backprop es pes)",
    )
    parser.add_argument("--meta-batch", type=int, default=2, help="episodes per meta-step (rule comparison)")
    parser.add_argument("--pairs", type=int, default=4, help="ES/PES antithetic pairs (rule comparison)")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds of the rule comparison (best kept)")
    parser.add_argument(
        "--configs", nargs="+", help="meta-training configs: compare optimizees loop and stack (e.g. family.yaml)"
    )
    parser.add_argument(
        "--offset-episodes", type=int, default=10, help="meta-batches whose start offsets are timed (with --configs)"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["loop", "stack"],
        choices=["loop", "stack", "compile"],
        help="how truncated_backprop unrolls (with --configs): loop, stack, compile (the loop, compiled); loop first",
    )
    add_device_argument(parser, default="cpu")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    if args.configs:
        if "loop" not in args.modes:
            parser.error("--modes needs loop, the reference of the ratios")
        compare_stacking(args, device)
        return
    options = dict(item.split("=", 1) for item in args.option)
    task = envs.make_task(args.task, device=device, **options)
    if args.rules or args.estimators:
        args.rules = args.rules or ["lstm", "mlp"]
        args.estimators = args.estimators or ["backprop"]
        compare_rules(task, args, device)
        return
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
