"""Path efficiency of optimizers: how far each one travels against the low-loss geodesic between its ends.

For each task and optimizer (Adam, SGD, momentum, RMSProp at the rates of the census config, and the shipped learned
rule ``family-mlp-v0``), a run of ``--steps`` steps from ``init_model(seed)`` is recorded; the geodesic between its
first and last iterate is certified at the run's own level, max(F(theta_0), F(theta_N)) (1 + 0.01): the chord when its
certified peak stays under that level, else the DSS path inside it (low-level bead settings). Prints one JSON line per
run and a Markdown table (median efficiency over seeds, and the worst), and draws ``--plot``.

    OMP_NUM_THREADS=1 python scripts/path_efficiency.py [--tasks poly_cubic digits_mlp digits_cnn] [--seeds 3]
        [--plot docs/img/path_efficiency.png]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import envs
from envs.tooling.config import load_config
from envs.tooling.plots import save_figure, subplots
from geodesics import ParamSpace
from metaopt import LearnedOptimizer
from metaopt.commands.census import CensusConfig
from metaopt.targets.census import chord_barrier, inside_length, path_efficiency, path_length


def run(task: envs.Task, seed: int, optimizer: str, lr: float, steps: int) -> torch.Tensor:
    """The iterates ``(steps + 1, P)`` of one run (the learned rule by its shipped name)."""
    model = task.init_model(seed)
    flat = [torch.cat([p.detach().reshape(-1) for p in model.parameters()])]
    built = LearnedOptimizer(model.parameters(), checkpoint="family-mlp-v0") if optimizer == "learned" else optimizer

    def record(step: int, loss: float, m: torch.nn.Module) -> None:
        flat.append(torch.cat([p.detach().reshape(-1) for p in m.parameters()]))

    rate = None if optimizer == "learned" else lr
    envs.fit(task, seed, optimizer=built, lr=rate, steps=steps, model=model, evaluate=False, callback=record)
    return torch.stack(flat)


def main(argv: list[str] | None = None) -> int:
    """Measure, print and plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["poly_cubic", "digits_mlp", "digits_cnn"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="0: each task's recipe steps")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    census = load_config(CensusConfig, "metaopt/census/census.yaml", ["device=cpu"])
    rates = {o.name: o.lr for o in census.optimizers}
    rows: dict[tuple[str, str], list[float]] = {}
    for name in args.tasks:
        task = envs.make_task(name)
        space = ParamSpace.from_task(task)
        steps = args.steps or task.recipe.steps
        for optimizer in ("adam", "sgd", "momentum", "rmsprop", "learned"):
            lr = {"learned": 1.0, "rmsprop": task.recipe.lr / 10}.get(
                optimizer, rates.get(optimizer, {}).get(name, task.recipe.lr)
            )
            for seed in range(args.seeds):
                iterates = run(task, seed, optimizer, lr, steps)
                ends = space.batched_eval_loss(torch.stack([iterates[0], iterates[-1]])).double()
                level = float(ends.max()) * 1.01
                check = chord_barrier(space, iterates[0], iterates[-1], level, census.curve)
                length, _ = inside_length(space, iterates[0], iterates[-1], level, census.dss, check)
                geodesic = length * float((iterates[-1] - iterates[0]).double().norm())
                efficiency = path_efficiency(iterates, geodesic) if length == length else float("nan")
                rows.setdefault((name, optimizer), []).append(efficiency)
                print(json.dumps({"task": name, "optimizer": optimizer, "seed": seed, "lr": lr, "steps": steps,
                                  "final_loss": float(ends[1]), "blocked": check.blocked, "inside_length": length,
                                  "travelled": path_length(iterates), "efficiency": efficiency}))  # fmt: skip
    print("\n| task | optimizer | efficiency, median over seeds (worst) |\n|---|---|---|")
    for (name, optimizer), values in rows.items():
        finite = [v for v in values if v == v]
        cell = f"{statistics.median(finite):.3g} ({min(finite):.3g})" if finite else "not connected"
        print(f"| {name} | {optimizer} | {cell} |")
    if args.plot:
        fig, ax = subplots(figsize=(7, 4))
        names = list(dict.fromkeys(n for n, _ in rows))
        optimizers = list(dict.fromkeys(o for _, o in rows))
        width = 0.8 / len(optimizers)
        for i, optimizer in enumerate(optimizers):
            medians = [statistics.median([v for v in rows[(n, optimizer)] if v == v] or [float("nan")]) for n in names]
            ax.bar([k + i * width for k in range(len(names))], medians, width, label=optimizer)
        ax.set(xticks=[k + 0.4 - width / 2 for k in range(len(names))], xticklabels=names, yscale="log",
               ylabel="geodesic length / path travelled", title="Path efficiency (median over seeds)")  # fmt: skip
        ax.legend(fontsize=8)
        save_figure(fig, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
