"""Threshold sweeps (DSS paper, §4 and Figure 1): normalized geodesic length and beads against the level L0.

For each threshold, N independent pairs of models are trained until their evaluation loss is below L0 (fresh seeds
for every pair, training stops at the first check below L0) and connected with DSS. Pairs are processed in groups:
the endpoints of a group train as one batch with the task's recipe (``geodesics.endpoints.train_endpoints`` on one
shared batch stream) and its pairs connect concurrently (``connect_many``). A group is the unit of resumption: its
pairs' records are written together, a killed sweep recomputes only unfinished groups, and since group composition
is fixed by the config, a resumed sweep gives exactly what an uninterrupted one gives. Under ``torchrun`` the groups
still to do are shared out round-robin (:func:`envs.tooling.distributed.shard`); rank 0 writes the report.

The aggregation is pure (:func:`aggregate`): per threshold, the share of pairs connected and, over connected pairs,
the mean and standard error of the normalized length and of the number of beads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from envs.errors import InvalidValue
from envs.task import Task
from envs.tooling import distributed
from envs.tooling.config import RunOptions, TaskConfig, check_range
from envs.tooling.runs import Run
from envs.training.optim import list_optimizers
from geodesics.alignment import align, check_alignment
from geodesics.beads import FINISHES, batched_optimizer
from geodesics.commands.preamble import command_space
from geodesics.commands.report import csv_text
from geodesics.endpoints import train_endpoints
from geodesics.finders import DSSConfig, connect_many
from geodesics.plots import plot_sweep
from geodesics.space import ParamSpace, check_strategy

__all__ = ["SweepConfig", "aggregate", "pair_seeds", "run_sweep"]


@dataclass
class SweepConfig(RunOptions):
    """Configuration of ``geodesics sweep``."""

    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="poly_cubic"))
    """The task whose level sets are measured."""
    name: str = "sweep"
    """Prefix of the run directory name."""
    thresholds: list[float] = field(default_factory=lambda: [0.2, 0.1, 0.05])
    """The levels L0 (evaluation loss), in any order."""
    pairs: int = 10
    """Independent pairs of models per threshold."""
    concurrent: int = 10
    """Pairs trained and connected together in one batch (a group, the unit of resumption)."""
    seed: int = 0
    """Base seed; pair p at threshold index k trains models from seeds seed + 2 (k * pairs + p) and that + 1."""
    train_steps: int = 0
    """Step budget to train each endpoint below L0 (0: five times the task's recipe steps)."""
    train_optimizer: str = ""
    """Optimizer of the endpoints, a registered name (empty: the task's recipe optimizer)."""
    train_lr: float = 0.0
    """Learning rate of the endpoints (0: the task's recipe rate; the paper preset: Adam at 1e-3)."""
    train_finish: str = "none"
    """``lbfgs``: an endpoint still above L0 after ``train_steps`` gets up to ``train_finish_steps`` L-BFGS iterations
    (endpoints that reached L0 are unchanged, bit for bit); ``none``: it stays untrained and its pair is skipped."""
    train_finish_steps: int = 2000
    """L-BFGS iterations at most per endpoint with ``train_finish=lbfgs`` (at least 1)."""
    dss: DSSConfig = field(default_factory=DSSConfig)
    """Path finder (``dss.finder``: name and options), shared budgets and checks."""
    align: str = "none"
    """Before connecting each pair: ``none``, or ``weight_matching`` (B's hidden units permuted to match A's)."""
    strategy: str = "auto"
    """How a stack of models is evaluated (``geodesics.ParamSpace``): ``auto`` (``loop`` on CPU, ``vmap`` on CUDA),
    ``loop`` (exact: each model as if alone), ``vmap``, or ``bmm`` (MLP tasks only: explicit batched matmuls and a
    hand-written backward, several times faster than the loop on CPU; agrees with it to rounding)."""

    def __post_init__(self) -> None:
        check_alignment(self)
        check_strategy(self)
        check_range(self, "thresholds", low=0, low_open=True)
        check_range(self, "pairs", low=1, integer=True)
        check_range(self, "concurrent", low=1, integer=True)
        check_range(self, "seed", low=0, integer=True)
        check_range(self, "train_steps", low=0, integer=True)
        check_range(self, "train_lr", low=0)
        if self.train_finish not in FINISHES:
            message = f"must be one of {', '.join(FINISHES)}, got {self.train_finish!r}"
            raise InvalidValue(type(self), "train_finish", self.train_finish, message)
        check_range(self, "train_finish_steps", low=1, integer=True)
        if self.train_optimizer and self.train_optimizer not in list_optimizers():
            names = ", ".join(list_optimizers())
            message = f"must be empty or a registered optimizer ({names}), got {self.train_optimizer!r}"
            raise InvalidValue(type(self), "train_optimizer", self.train_optimizer, message)
        if self.train_finish != "none" and self.train_optimizer and batched_optimizer(self.train_optimizer) is None:
            message = f"needs a train_optimizer with a batched twin, got {self.train_optimizer!r}"
            raise InvalidValue(type(self), "train_finish", self.train_finish, message)


def pair_seeds(config: SweepConfig, threshold_index: int, pair: int) -> tuple[int, int]:
    """The two training seeds of a pair: distinct for every pair of every threshold."""
    first = config.seed + 2 * (threshold_index * config.pairs + pair)
    return first, first + 1


def _groups(config: SweepConfig) -> list[tuple[int, list[int]]]:
    """``(threshold index, pairs)`` for every group, in a fixed order."""
    return [
        (k, list(range(start, min(start + config.concurrent, config.pairs))))
        for k in range(len(config.thresholds))
        for start in range(0, config.pairs, config.concurrent)
    ]


def _run_group(
    config: SweepConfig, task: Task, space: ParamSpace, run: Run, k: int, pairs: list[int]
) -> list[dict[str, Any]]:
    """Train and connect one group; save its strings; return one record per pair."""
    threshold = config.thresholds[k]
    started = time.perf_counter()
    seeds = [s for p in pairs for s in pair_seeds(config, k, p)]
    budget = config.train_steps or 5 * task.recipe.steps
    endpoints = train_endpoints(space, seeds, threshold, max_steps=budget, optimizer=config.train_optimizer or None,
                                lr=config.train_lr or None, shared_batches=config.seed * 7919 + k,
                                finish=config.train_finish, finish_steps=config.train_finish_steps)  # fmt: skip
    thetas, losses, reached = endpoints.thetas, endpoints.losses, endpoints.reached
    trained = [p for i, p in enumerate(pairs) if bool(reached[2 * i]) and bool(reached[2 * i + 1])]
    index = {p: i for i, p in enumerate(pairs)}
    couples = [(thetas[2 * index[p]], thetas[2 * index[p] + 1]) for p in trained]
    couples = [(a, align(space, a, b, config.align)) for a, b in couples]
    strings = dict(zip(trained, connect_many(space, couples, threshold, config.dss, keys=trained)))
    seconds = time.perf_counter() - started
    records = []
    for p in pairs:
        i = index[p]
        record: dict[str, Any] = {
            "kind": "pair", "threshold_index": k, "threshold": threshold, "pair": p,
            "seeds": list(pair_seeds(config, k, p)),
            "endpoint_losses": [float(losses[2 * i]), float(losses[2 * i + 1])], "trained": p in strings,
            "group_seconds": seconds, "group_size": len(pairs),
        }  # fmt: skip
        if p in strings:
            string = strings[p]
            path = run.subdir("strings") / f"L{k:02d}-pair{p:03d}.pt"
            string.save(path)
            record.update(string.metrics(), string=str(path.relative_to(run.path)))
        else:
            within = f"{budget} steps" + (f" and {config.train_finish_steps} L-BFGS iterations"
                                          if config.train_finish != "none" else "")  # fmt: skip
            record.update(connected=False, reason=f"endpoints: not trained below L0 within {within}")
        records.append(record)
    return records


def _mean_se(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per threshold, sorted by decreasing L0.

    Each row: pairs, trained, connected, share connected, and the mean and standard error of the normalized length
    and of the number of beads over connected pairs.
    """
    rows = []
    for threshold in sorted({r["threshold"] for r in records}, reverse=True):
        group = [r for r in records if r["threshold"] == threshold]
        connected = [r for r in group if r.get("connected")]
        length, length_se = _mean_se([r["normalized_length"] for r in connected])
        beads, beads_se = _mean_se([float(r["num_beads"]) for r in connected])
        trained = sum(bool(r["trained"]) for r in group)
        rows.append({
            "threshold": threshold, "pairs": len(group), "trained": trained, "connected": len(connected),
            "share_connected": len(connected) / trained if trained else math.nan,
            "normalized_length_mean": length, "normalized_length_se": length_se,
            "num_beads_mean": beads, "num_beads_se": beads_se,
            "max_loss_mean": _mean_se([r["max_loss"] for r in connected])[0],
            "seconds": sum(r["group_seconds"] / r["group_size"] for r in group),
        })  # fmt: skip
    return rows


def _report(task_name: str, rows: list[dict[str, Any]], total_seconds: float) -> str:
    lines = [
        f"# geodesics sweep: {task_name}\n",
        "Mean ± standard error over connected pairs; `connected` counts pairs whose endpoints both reached L0.\n",
        "| L0 | pairs trained | connected | normalized length | beads | max loss on path | seconds |",
        "|---:|---:|---:|---|---|---:|---:|",
    ]
    for r in rows:
        if r["connected"]:
            geometry = (
                f"{r['normalized_length_mean']:.4f} ± {r['normalized_length_se']:.4f} | "
                f"{r['num_beads_mean']:.2f} ± {r['num_beads_se']:.2f} | {r['max_loss_mean']:.4g}"
            )
        else:
            geometry = "– | – | –"  # no connected pair: nothing to average
        lines.append(
            f"| {r['threshold']:.4g} | {r['trained']}/{r['pairs']} | {r['connected']} | {geometry} | "
            f"{r['seconds']:.1f} |"
        )
    if any(r["trained"] < r["pairs"] for r in rows):
        lines.append(
            "\nPairs not trained: a model did not get below L0 within the step budget (`train_steps`); raise it or"
            " drop that level."
        )
    lines.append(f"\nTotal wall time of the groups: {total_seconds:.1f} s.\n\n![sweep](plots/sweep.png)\n")
    return "\n".join(lines)


def run_sweep(cfg: SweepConfig, on_group: Any = None) -> list[dict[str, Any]]:
    """Run (or continue) a sweep; returns the aggregated rows.

    Args:
        cfg: the sweep configuration.
        on_group: optional callback after each finished group (tests use it to simulate a kill).
    """
    space = command_space(cfg)
    task = space.task
    run = Run.create(f"{cfg.name}-{task.name}", cfg, cfg.out, shared=True)
    main = distributed.is_main()
    run.announce()
    with run:
        done = {(r["threshold_index"], r["pair"]) for r in run.agreed_records("pair")}
        groups = _groups(cfg)
        todo = [(k, pairs) for k, pairs in groups if any((k, p) not in done for p in pairs)]
        mine = distributed.shard(todo)
        with tqdm(total=len(groups), initial=len(groups) - len(todo), desc=f"sweep {task.name}", unit="group",
                  disable=not main) as bar:  # fmt: skip
            for k, pairs in mine:
                for record in _run_group(cfg, task, space, run, k, pairs):
                    if (k, record["pair"]) not in done:
                        run.append_record(record)
                bar.update(min(distributed.world_size(), bar.total - bar.n))  # the others work alongside
                if on_group is not None:
                    on_group(k, pairs)
        run.collect()
        records = sorted(run.records("pair"), key=lambda r: (r["threshold_index"], r["pair"]))
        rows = aggregate(records)
        if not main:
            return rows
        run.write_text("results.csv", csv_text(rows))
        run.write_text("pairs.csv", csv_text([_flat(r) for r in records]))
        total = sum(r["group_seconds"] / r["group_size"] for r in records)
        run.write_text("report.md", _report(task.name, rows, total))
        figure = plot_sweep(rows, run.subdir("plots") / "sweep.png", title=task.name)
        for k, row in enumerate(rows):
            run.log_scalars("geodesic/sweep", {key: float(v) for key, v in row.items()}, k)
    print(run.path.joinpath("report.md").read_text())
    print(f"plot: {figure}")
    return rows


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    keys = ["threshold", "pair", "seeds", "endpoint_losses", "trained", "connected", "reason", "num_beads",
            "normalized_length", "max_loss", "string"]  # fmt: skip
    return {k: record.get(k, "") for k in keys}
