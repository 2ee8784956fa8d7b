"""Cost of the learned optimizers in drop-in use across model sizes: step and training step against Adam's.

For each parameter count of ``--sizes`` (default 1.5k, 10k, 100k, 1M; add 10M on CUDA) a 3-layer MLP
``64 -> w -> w -> 10`` (``w`` chosen to give about that count) is trained on fixed random batches of ``--batch`` (128)
rows, or with ``--model transformer`` a 4-block ``envs.task.nn.CharTransformer`` (4 heads, width a multiple of 4
chosen likewise, ``charlm``'s 103 characters) on fixed random windows of 32 characters (``--batch`` windows, default
16: 512 tokens), in a plain loop (forward, backward, ``step()``), with ``torch.optim.Adam(foreach=True)`` and with
``torch.optim.AdamW(foreach=True)`` and ``LearnedOptimizer`` over each rule of ``--rules`` (a registered rule name,
made with its default options or with ``NAME:key=value,...`` options such as ``tiny:learned_tensors=hidden``, or a
shipped rule's name such as ``family-mlp-v0``, also with options that keep its weights, ``family-v3:ns_block=64``;
the cost does not depend on the weights), and with ``--compile`` also over each rule with the optimizer's
``compile=True`` (rows ``NAME+compile``; compiled in the warm-up, which is not timed). The optimizers alternate in
``--repeats`` rounds in one process and each keeps its best round, so a change in the machine's load hits all alike.
Per size and rule one JSON line:

* ``step_ratio``, ``train_step_ratio``: the rule's ``step()`` and whole training step over Adam's (``*_adamw``: over
  AdamW's, the baseline of the hybrid ``learned_tensors`` options);
* ``adam_bandwidth_bound_ms``: Adam's step if it only moved its bytes (7 floats per parameter: read p, g, m, v,
  write p, m, v) at the copy bandwidth measured in the same rounds, and ``adam_over_bound``;
* ``rule_flop_per_param`` (the rule's matmul FLOP per coordinate of this model, counted by
  ``torch.utils.flop_counter`` on the functional step; the hybrid's AdamW coordinates count none),
  ``rule_compute_bound_ms`` (those FLOP at the matmul peak measured in the same rounds: 256-row products of the rule's
  own layer width, the shape its step multiplies) and ``rule_share`` (bound over measured step: 1 is the rule at its
  compute bound);
* with ``--muon``: ``step_ratio_muon``, ``train_step_ratio_muon`` (the rule over Muon, ``envs.training.muon.MuonAdamW``
  with every matrix orthogonalized whole in float32, AdamW on the rest: the baseline that pays for the same
  orthogonalization) and ``muon_step_ratio_adam`` (Muon's step over Adam's);
* ``state_bytes_per_param`` of the rule and of Adam; threads and load average. On CUDA the device is synchronized
  around each timed ``step()``.

At the end a Markdown table of the same rows goes to standard error (standard output stays JSON lines): one line per
rule, one column per size, each cell the step over Adam's with the whole training step's in brackets, then Adam's
step in ms, the threads and the load average over the run.

    OMP_NUM_THREADS=1 python benchmarks/learned_dropin_speed.py [--sizes 1500 10000 100000 1000000]
        [--rules mlp lstm tiny tiny:learned_tensors=hidden] [--compile] [--device cpu|cuda|auto] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence

import torch
from common import add_device_argument, emit, parse_device, sync
from torch import nn

from envs.task.nn import CharTransformer
from envs.training.muon import MuonAdamW
from metaopt import LearnedOptimizer, list_pretrained, load_net
from metaopt.compare.config import split_learned
from metaopt.rules import LearnedRule, list_rules, make_rule

Maker = Callable[[list[torch.Tensor]], torch.optim.Optimizer]
ADAM_FLOATS_MOVED = 7
"""Floats Adam reads and writes per parameter and step (p, g, m, v in; p, m, v out)."""


MODELS = ("mlp", "transformer")
"""What ``--model`` trains: the 3-layer MLP or the 4-block character transformer."""
VOCAB, WINDOW, BLOCKS = 103, 32, 4
"""The transformer's vocabulary (``charlm``'s characters), window length and blocks."""


def transformer_params(width: int) -> int:
    """Parameters of the 4-block ``CharTransformer`` of ``width`` over ``VOCAB`` tokens."""
    return BLOCKS * (12 * width * width + 13 * width) + (2 * VOCAB + WINDOW) * width + VOCAB + 2 * width


def width_for(params: int, model: str = "mlp") -> int:
    """The width whose model has the parameter count nearest ``params``.

    The MLP's hidden width ``w`` (``w^2 + 76 w + 10`` parameters), or the transformer's width, a multiple of 4 (its
    heads) from 4 up.
    """
    if model == "transformer":
        return min(range(4, 4097, 4), key=lambda width: abs(transformer_params(width) - params))
    return max(1, round((-76 + math.sqrt(76**2 + 4 * max(params - 10, 0))) / 2))


def build_model(width: int, device: torch.device, model: str = "mlp") -> nn.Module:
    torch.manual_seed(0)
    if model == "transformer":
        return CharTransformer(VOCAB, width, heads=4, num_layers=BLOCKS, context=WINDOW).to(device)
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)).to(
        device
    )


def batch_for(model: str, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed random inputs and targets: ``batch`` rows for the MLP, ``batch`` windows of characters otherwise."""
    generator = torch.Generator(device="cpu").manual_seed(1)
    if model == "transformer":
        tokens = torch.randint(0, VOCAB, (batch, WINDOW + 1), generator=generator).to(device)
        return tokens[:, :-1], tokens[:, 1:]
    x = torch.randn(batch, 64, generator=generator).to(device)
    return x, torch.randint(0, 10, (batch,), generator=generator).to(device)


def make_named_rule(spec: str, device: torch.device) -> LearnedRule:
    """A registered rule (``NAME[:key=value,...]``), or a shipped rule by name, with options that keep its weights.

    ``family-v3:ns_block=64`` is the shipped rule with that option; a registered name wins.
    """
    name, options = split_learned(spec)  # as a comparison's learned entry
    if name in list_rules():
        return make_rule(name, options).to(device)
    return load_net(name, options or None).to(device)


def timed(
    width: int, make: Maker, steps: int, batch: int, device: torch.device, kind: str = "mlp"
) -> tuple[float, float, float]:
    """Seconds per ``step()`` and per training step, and the optimizer's state bytes per parameter."""
    model = build_model(width, device, kind)
    optimizer = make(list(model.parameters()))
    x, y = batch_for(kind, batch, device)
    step_time = 0.0
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x).flatten(0, -2), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync(device)
        t0 = time.perf_counter()
        optimizer.step()
        sync(device)
        step_time += time.perf_counter() - t0
    total = time.perf_counter() - started
    count = sum(p.numel() for p in model.parameters())
    state = sum(
        v.numel() * v.element_size() for piece in optimizer.state.values() for v in piece.values() if torch.is_tensor(v)
    )
    return step_time / steps, total / steps, state / count


def rule_flop_per_param(rule: LearnedRule, params: Sequence[torch.Tensor]) -> float:
    """Matmul FLOP per coordinate of one ``rule.step`` over ``params`` (the functional step, counted once)."""
    from torch.utils.flop_counter import FlopCounterMode

    tensors = [p.detach().to(rule.dtype) for p in params]
    count = sum(p.numel() for p in tensors)
    grads = torch.randn(count, device=tensors[0].device, dtype=rule.dtype)
    state = rule.join([rule.init_state(p) for p in tensors])
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        rule.step(grads, state, tensors)
    return counter.get_total_flops() / count


def rule_width(rule: LearnedRule) -> int:
    """The widest output of the rule's weight matrices (the side of the products its step multiplies)."""
    return max([weight.shape[0] for weight in rule.parameters() if weight.dim() == 2] + [8])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=None,
                        help="parameter counts (default 1500 10000 100000 1000000, and 10000000 on CUDA)")  # fmt: skip
    parser.add_argument("--rules", nargs="+", default=["mlp", "lstm"],
                        help="registered rule names (NAME:key=value,... sets options), or shipped rules")  # fmt: skip
    parser.add_argument("--compile", action="store_true",
                        help="also time each rule with LearnedOptimizer(compile=True) (rows NAME+compile)")  # fmt: skip
    parser.add_argument("--muon", action="store_true",
                        help="also time Muon (envs.training.muon.MuonAdamW: every matrix orthogonalized whole, "
                        "AdamW on the rest) in the same rounds: rows gain step_ratio_muon, "
                        "train_step_ratio_muon")  # fmt: skip
    parser.add_argument("--model", choices=MODELS, default="mlp",
                        help="the 3-layer MLP (default) or the 4-block character transformer")  # fmt: skip
    parser.add_argument("--batch", type=int, default=None,
                        help="rows per batch (default 128), or the transformer's windows (default 16)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; each keeps its best")
    parser.add_argument("--budget", type=float, default=3e6,
                        help="coordinate-steps per timed loop: steps = clamp(budget / params, 3, 200)")  # fmt: skip
    add_device_argument(parser, default="cpu")
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    if args.batch is None:
        args.batch = 16 if args.model == "transformer" else 128
    for key in ("batch", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be >= 1, got {getattr(args, key)}")
    sizes = args.sizes or [1500, 10_000, 100_000, 1_000_000] + ([10_000_000] if device.type == "cuda" else [])
    if args.budget <= 0:
        parser.error(f"--budget must be > 0, got {args.budget}")
    if min(sizes) < 100:
        parser.error(f"--sizes must be >= 100 parameters, got {min(sizes)}")
    valid = list_rules() + list_pretrained()
    unknown = [spec for spec in args.rules if spec.partition(":")[0] not in valid]
    if unknown:
        parser.error(f"--rules: unknown rule(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    try:
        rules = {spec: make_named_rule(spec, device) for spec in args.rules}
    except (ValueError, TypeError) as error:  # a malformed or invalid option (InvalidValue is a ValueError)
        parser.error(f"--rules: {error}")
    rows = []
    for size in sizes:
        model_params = list(build_model(width_for(size, args.model), device, args.model).parameters())
        flops = {spec: rule_flop_per_param(rule, model_params) for spec, rule in rules.items()}
        for row in measure(size, rules, flops, args, device):
            emit(row)
            rows.append(row)
    print(summary(rows), file=sys.stderr)


def summary(rows: Sequence[dict]) -> str:
    """The rows as one Markdown table: a line per rule, a column per size, ``step ratio (training-step ratio)``.

    Under it Adam's step in ms at each size, and the threads and load averages the rows report (their range).
    """
    sizes = sorted({row["params"] for row in rows})
    rules = list(dict.fromkeys(row["rule"] for row in rows))
    cells = {(row["rule"], row["params"]): row for row in rows}
    lines = [
        "| rule, step over Adam's (training step) | " + " | ".join(f"{size:,}" for size in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for rule in rules:
        found = [cells.get((rule, size)) for size in sizes]
        text = [f"{row['step_ratio']:.2f}x ({row['train_step_ratio']:.2f}x)" if row else "-" for row in found]
        lines.append(f"| {rule} | " + " | ".join(text) + " |")
    adam = {row["params"]: row["adam_step_ms"] for row in rows}
    lines.append("| Adam's step, ms | " + " | ".join(f"{adam[size]:.3g}" for size in sizes) + " |")
    loads = [row["load_average"][0] for row in rows]
    threads = sorted({row["threads"] for row in rows})
    lines.append(f"\nthreads {', '.join(map(str, threads))}; load average {min(loads):.2f}-{max(loads):.2f}")
    return "\n".join(lines)


def learned_maker(rule: LearnedRule, compile: bool = False) -> Maker:
    """``LearnedOptimizer`` over ``rule`` (shared by every model it is made for)."""
    return lambda params: LearnedOptimizer(params, rule=rule, compile=compile)


def measure(
    size: int, rules: dict[str, LearnedRule], flops: dict[str, float], args: argparse.Namespace, device: torch.device
) -> list[dict[str, object]]:
    """One row per rule for the model of about ``size`` parameters (see the module docstring)."""
    kind = args.model
    width = width_for(size, kind)
    count = sum(p.numel() for p in build_model(width, device, kind).parameters())
    steps = int(min(200, max(3, args.budget // count)))
    makers: dict[str, Maker] = {
        "adam": lambda params: torch.optim.Adam(params, lr=1e-3, foreach=True),
        "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, foreach=True),
    }
    if args.muon:
        makers["muon"] = lambda params: MuonAdamW(params, lr=1e-3)
    variants: dict[str, tuple[str, bool]] = {}  # row name: (rule spec, compiled)
    for name, rule in rules.items():
        makers[name] = learned_maker(rule)
        variants[name] = (name, False)
        if args.compile:
            makers[f"{name}+compile"] = learned_maker(rule, compile=True)
            variants[f"{name}+compile"] = (name, True)
    source = torch.randn(max(count, 1 << 22), device=device)  # at least 16 MB: past the caches
    target = torch.empty_like(source)
    widths = {rule_width(rule) for rule in rules.values()}
    operands = {w: (torch.randn(w, w, device=device), torch.randn(w, 256 * 64, device=device)) for w in widths}
    best: dict[str, tuple[float, float, float]] = {key: (math.inf, math.inf, 0.0) for key in makers}
    copy_best, peak_best = math.inf, dict.fromkeys(widths, math.inf)
    for make in makers.values():
        timed(width, make, 2, args.batch, device, kind)  # warm-up
    for _ in range(args.repeats):  # alternate, so a change in the machine's load hits every optimizer alike
        for key, make in makers.items():
            step, total, state = timed(width, make, steps, args.batch, device, kind)
            best[key] = (min(best[key][0], step), min(best[key][1], total), state)
        sync(device)
        t0 = time.perf_counter()
        target.copy_(source)
        sync(device)
        copy_best = min(copy_best, time.perf_counter() - t0)
        for w, (a, b) in operands.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(8):
                torch.mm(a, b)
            sync(device)
            peak_best[w] = min(peak_best[w], (time.perf_counter() - t0) / 8)
    bandwidth = 2 * source.numel() * source.element_size() / copy_best  # bytes read and written per second
    adam_step, adam_total, adam_state = best["adam"]
    adamw_step, adamw_total, _ = best["adamw"]
    adam_bound = ADAM_FLOATS_MOVED * 4 * count / bandwidth
    rows = []
    for name, (spec, compiled) in variants.items():
        rule = rules[spec]
        step, total, state = best[name]
        peak = 2 * rule_width(rule) ** 2 * 256 * 64 / peak_best[rule_width(rule)]
        bound = flops[spec] * count / peak
        rows.append({
            "benchmark": "learned_dropin_speed", "model": kind, "rule": name, "params": count, "width": width,
            "batch": args.batch,
            "steps": steps, "device": str(device), "threads": torch.get_num_threads(), "compiled": compiled,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "adam_step_ms": round(adam_step * 1e3, 4), "rule_step_ms": round(step * 1e3, 4),
            "step_ratio": round(step / adam_step, 2), "adam_train_step_ms": round(adam_total * 1e3, 4),
            "rule_train_step_ms": round(total * 1e3, 4), "train_step_ratio": round(total / adam_total, 2),
            "adamw_step_ms": round(adamw_step * 1e3, 4), "step_ratio_adamw": round(step / adamw_step, 2),
            "train_step_ratio_adamw": round(total / adamw_total, 2),
            "bandwidth_gb_s": round(bandwidth / 1e9, 2), "adam_bandwidth_bound_ms": round(adam_bound * 1e3, 4),
            "adam_over_bound": round(adam_step / adam_bound, 2), "rule_flop_per_param": round(flops[spec], 1),
            "matmul_peak_gflop_s": round(peak / 1e9, 2), "rule_compute_bound_ms": round(bound * 1e3, 4),
            "rule_share": round(bound / step, 3), "state_bytes_per_param": round(state, 2),
            "adam_state_bytes_per_param": round(adam_state, 2),
        })  # fmt: skip
        if args.muon:
            muon_step, muon_total, _ = best["muon"]
            rows[-1].update({
                "muon_step_ms": round(muon_step * 1e3, 4), "step_ratio_muon": round(step / muon_step, 2),
                "train_step_ratio_muon": round(total / muon_total, 2),
                "muon_step_ratio_adam": round(muon_step / adam_step, 2),
            })  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
