"""``metaopt targets``: build a geodesic-target dataset from base-optimizer trajectories (see :mod:`metaopt.targets`).

Each (task, seed) base run is one shard and one record: a killed command rerun with the same ``out=`` skips the shards
already written; under ``torchrun`` the base runs still to do are shared out round-robin and rank 0 writes the
report. Outputs: ``targets/*.pt``, ``records.jsonl``, ``report.md`` (windows, share connected, normalized
length against the base optimizer's step, throughput), ``plots/length_vs_step.png`` and TensorBoard scalars
``geodesic/targets/*`` by step.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from envs.registry import make_task
from envs.tooling import distributed
from envs.tooling.config import RunOptions, TaskConfig, check_range
from envs.tooling.plots import save_figure, subplots
from envs.tooling.runs import Run
from geodesics import DSSConfig, ProjectionConfig
from metaopt.targets import make_shard, save_shard
from metaopt.targets.build import LEVEL_RULES, rule_description

__all__ = ["TargetsConfig", "run_targets"]


def _dss() -> DSSConfig:
    return DSSConfig(max_rounds=6, max_steps=500, keep_snapshots=False)


@dataclass
class TargetsConfig(RunOptions):
    """Configuration of ``metaopt targets`` (the files under ``configs/metaopt/targets/``)."""

    tasks: list[TaskConfig] = field(default_factory=lambda: [TaskConfig(name="digits_mlp")])
    """The task family whose base trajectories are recorded."""
    name: str = "targets"
    """Prefix of the run directory name."""
    seeds: int = 4
    """Base runs per task; run seeds seed_offset .. seed_offset + seeds - 1."""
    seed_offset: int = 0
    """First base-run seed (keep these apart from the seeds the learned optimizer is evaluated on)."""
    optimizer: str = "adam"
    """Base optimizer (a name from envs.list_optimizers())."""
    lr: float = 0.0
    """Base optimizer's learning rate (0: the task's recipe learning rate)."""
    steps: int = 100
    """N: steps of each base run."""
    window: int = 20
    """T: steps between the two ends of a window (the learned optimizer's truncation)."""
    stride: int = 10
    """S: a window starts every S steps."""
    slack: float = 0.05
    """Margin of the level: start multiplies it by (1 + slack); between and descent add slack times the window's loss
    drop."""
    level: str = "start"
    """Level rule of each window: start (L0 = F(theta_t)(1 + slack), measured to give straight chords), between
    (L0 = F(theta_{t+T}) + (q + slack)(F(theta_t) - F(theta_{t+T})): the path first descends from theta_t to the
    nearest point of that level set, then follows the DSS geodesic inside it) or descent (the path falls steadily:
    at arc-length fraction s it stays under F(theta_t) - (s - slack)(F(theta_t) - F(theta_{t+T})), certified)."""
    q: float = 0.0
    """between only: where the level sits between the two ends' losses, 0 <= q with q + slack < 1."""
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    """between only: the projection of theta_t onto the level set."""
    dss: DSSConfig = field(default_factory=_dss)
    """DSS settings for the windows."""

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("tasks is empty; name at least one task")
        check_range(self, "seeds", low=1, integer=True)
        check_range(self, "seed_offset", low=0, integer=True)
        check_range(self, "lr", low=0)
        check_range(self, "steps", low=1, integer=True)
        check_range(self, "window", low=1, high=self.steps, integer=True)
        check_range(self, "stride", low=1, integer=True)
        check_range(self, "slack", low=0)
        check_range(self, "q", low=0, high=1, high_open=True)
        if self.level == "between" and self.q + self.slack >= 1:
            raise ValueError(f"between needs q + slack < 1, got q = {self.q}, slack = {self.slack}")
        if self.level not in LEVEL_RULES:
            raise ValueError(f"level must be one of {', '.join(LEVEL_RULES)}, got {self.level!r}")


def _label(task: TaskConfig, index: int) -> str:
    return f"{index:02d}-{task.name}"


def run_targets(cfg: TargetsConfig) -> dict[str, Any]:
    """Build (or finish) the dataset; returns a summary (windows, connected, pairs per minute)."""
    tasks = [make_task(t.name, device=cfg.device, dtype=cfg.dtype, **t.options).load() for t in cfg.tasks]
    run = Run.create(cfg.name, cfg, cfg.out, shared=True)
    main = distributed.is_main()
    if main:
        print(f"run directory: {run.path}")
    with run:
        done = {(r["label"], r["seed"]) for r in run.records("shard")}
        units = [(_label(t, i), task, seed) for i, (t, task) in enumerate(zip(cfg.tasks, tasks))
                 for seed in range(cfg.seed_offset, cfg.seed_offset + cfg.seeds)]  # fmt: skip
        folder = run.subdir("targets")
        mine = distributed.shard([u for u in units if (u[0], u[2]) not in done])
        with tqdm(total=len(units), initial=sum((u[0], u[2]) in done for u in units), desc="targets",
                  unit="shard", disable=not main) as bar:  # fmt: skip
            for label, task, seed in mine:
                started = time.perf_counter()
                problem = task.instance(seed)
                lr = cfg.lr or problem.recipe.lr
                shard = make_shard(problem, seed, optimizer=cfg.optimizer, lr=lr, steps=cfg.steps, window=cfg.window,
                                   stride=cfg.stride, slack=cfg.slack, dss=cfg.dss, level=cfg.level, q=cfg.q,
                                   projection=cfg.projection)  # fmt: skip
                path = folder / f"{label}-seed{seed}.pt"
                save_shard(shard, path)
                windows = shard["windows"]
                run.append_record({
                    "kind": "shard", "label": label, "task": task.name, "seed": seed,
                    "path": str(path.relative_to(run.path)),
                    "seconds": time.perf_counter() - started, "windows": len(windows),
                    "connected": sum(w["connected"] for w in windows),
                    "per_window": [{k: w[k] for k in ("t", "level", "level_end", "connected", "reason",
                                                      "normalized_length", "descent_length", "inside_length",
                                                      "inside_normalized_length", "num_beads") if k in w}
                                   for w in windows],
                })  # fmt: skip
                bar.update(min(distributed.world_size(), bar.total - bar.n))  # the others work alongside
        run.collect()
        if not main:
            return {"shards": len(run.records("shard"))}
        summary = _summarize(run, cfg)
    print(run.path.joinpath("report.md").read_text())
    print(f"dataset: {run.path / 'targets'}\ntensorboard --logdir {run.path / 'tb'}")
    return summary


def _summarize(run: Run, cfg: TargetsConfig) -> dict[str, Any]:
    records = sorted(run.records("shard"), key=lambda r: (r["label"], r["seed"]))  # whichever rank wrote them
    by_step: dict[int, list[float]] = defaultdict(list)
    total = connected = 0
    for record in records:
        for w in record["per_window"]:
            total += 1
            if w["connected"]:
                connected += 1
                by_step[w["t"]].append(float(w["normalized_length"]))
    seconds = sum(r["seconds"] for r in records)
    summary = {
        "shards": len(records), "windows": total, "connected": connected,
        "pairs_per_minute": 60 * total / seconds if seconds else math.nan, "seconds": seconds,
        "mean_normalized_length": {t: sum(v) / len(v) for t, v in sorted(by_step.items())},
    }  # fmt: skip
    for t, lengths in sorted(by_step.items()):
        run.log_scalars("geodesic/targets", {"normalized_length": sum(lengths) / len(lengths),
                                             "max_normalized_length": max(lengths)}, t)  # fmt: skip
    _plot(run, records)
    rows = "\n".join(f"| {t} | {len(v)} | {sum(v) / len(v):.4f} | {max(v):.4f} |" for t, v in sorted(by_step.items()))
    keys = ("normalized_length", "descent_length", "inside_length", "inside_normalized_length")
    parts = {key: [float(w[key]) for r in records for w in r["per_window"] if w["connected"] and key in w]
             for key in keys}  # fmt: skip
    spread = "\n".join(f"| {key} | {_percentiles(values)} |" for key, values in parts.items() if values)
    summary["percentiles"] = {key: _quantiles(values) for key, values in parts.items() if values}
    rule = rule_description(cfg.level, cfg.q, cfg.slack)
    run.write_text(
        "report.md",
        f"# metaopt targets\n\nBase optimizer `{cfg.optimizer}`, N = {cfg.steps} steps, windows of T = {cfg.window} "
        f"every S = {cfg.stride} steps, level rule `{cfg.level}`: {rule}.\n\n"
        f"{len(records)} shards, {total} windows, {connected} connected ({connected / max(total, 1):.0%}); "
        f"{seconds:.1f} s of work, {summary['pairs_per_minute']:.1f} pairs per minute.\n\n"
        "Lengths over ||theta_t+T - theta_t|| of the connected windows (descent: the projection leg; inside: the DSS "
        "path inside the level set; their sum is the normalized length; inside_normalized_length: the DSS path over "
        "its own chord, 1 when the level set does not bend it):\n\n"
        "| length | min / 10% / 50% / 90% / max |\n|---|---|\n"
        f"{spread}\n\n"
        "| t (base step) | connected windows | mean normalized length | max |\n|---:|---:|---:|---:|\n"
        f"{rows}\n\n![normalized length against the base optimizer's step](plots/length_vs_step.png)\n",
    )
    return summary


def _quantiles(values: list[float]) -> list[float]:
    ordered = torch.tensor(sorted(values), dtype=torch.float64)
    return torch.quantile(ordered, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)).tolist()


def _percentiles(values: list[float]) -> str:
    return " / ".join(f"{v:.4f}" for v in _quantiles(values))


def _plot(run: Run, records: list[dict[str, Any]]) -> None:
    fig, ax = subplots(figsize=(6.5, 4))
    for record in records:
        points = [(w["t"], w["normalized_length"]) for w in record["per_window"] if w["connected"]]
        if points:
            ax.plot(*zip(*points), "o-", ms=3, lw=0.8, alpha=0.6, label=f"{record['task']} seed {record['seed']}")
        missed = [w["t"] for w in record["per_window"] if not w["connected"]]
        if missed:
            ax.plot(missed, [1.0] * len(missed), "x", color="tab:red", ms=6)
    ax.set_xlabel("base optimizer step t (window start)")
    ax.set_ylabel("normalized geodesic length")
    ax.set_title("level-set curvature along training (x: window not connected)", fontsize=9)
    if len(records) <= 8:
        ax.legend(fontsize=7)
    save_figure(fig, run.subdir("plots") / "length_vs_step.png")
