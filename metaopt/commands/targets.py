"""``metaopt targets``: build a geodesic-target dataset from base-optimizer trajectories (see :mod:`metaopt.targets`).

Each (task, seed) base run is one shard and one record: a killed command rerun with the same ``out=`` skips the shards
already written; under ``torchrun`` the base runs still to do are shared out round-robin and rank 0 writes the
report. Outputs: ``targets/*.pt``, ``records.jsonl``, ``report.md`` (windows, share connected, normalized
length against the base optimizer's step, throughput), ``plots/length_vs_step.png`` (the spread of the
lengths per window and per third of training) and TensorBoard scalars ``geodesic/targets/*`` by step and
histograms ``geodesic/targets/<rule>/*``.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from envs.errors import InvalidValue
from envs.task.registry import make_task
from envs.tooling import distributed
from envs.tooling.config import RunOptions, TaskConfig, check_range
from envs.tooling.plots import save_figure, subplots
from envs.tooling.runs import Run
from geodesics import DSSConfig, ProjectionConfig, list_finders, takes_profiles
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
        if self.level == "descent" and not takes_profiles(self.dss.finder.name):
            able = ", ".join(name for name in list_finders() if takes_profiles(name))
            raise InvalidValue(
                TargetsConfig, "dss.finder.name", self.dss.finder.name,
                f"must be one of {able} with level=descent (a level profile), got {self.dss.finder.name!r}",
            )  # fmt: skip


def _label(task: TaskConfig, index: int) -> str:
    return f"{index:02d}-{task.name}"


def run_targets(cfg: TargetsConfig) -> dict[str, Any]:
    """Build (or finish) the dataset; returns a summary (windows, connected, pairs per minute)."""
    tasks = [make_task(t.name, device=cfg.device, dtype=cfg.dtype, **t.options).load() for t in cfg.tasks]
    run = Run.create(cfg.name, cfg, cfg.out, shared=True)
    main = distributed.is_main()
    run.announce()
    with run:
        done = {(r["label"], r["seed"]) for r in run.agreed_records("shard")}
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
    print(_short_summary(summary))
    print(f"report: {run.path / 'report.md'} (every table)\ndataset: {run.path / 'targets'}")
    return summary


def _short_summary(summary: dict[str, Any]) -> str:
    """Two lines for the terminal: windows connected, and the spread of the lengths (the tables are in the report)."""
    lines = [f"{summary['connected']} of {summary['windows']} windows connected in {summary['shards']} base runs"]
    names = {
        "normalized_length": "normalized length",
        "inside_normalized_length": "inside the level set, over its own chord",
    }
    for key, label in names.items():
        if key in summary["percentiles"]:
            low, _, median, _, high = summary["percentiles"][key]
            lines.append(f"{label}: median {median:.4f} (min {low:.4f}, max {high:.4f})")
    return "\n".join(lines)


PHASES = ("early", "middle", "late")
"""Training phases: a window starting at step t is in third floor(3 t / N) of the base run's N steps."""
PARTS = ("normalized_length", "descent_length", "inside_length", "inside_normalized_length")
"""The lengths recorded per connected window (all over the chord but the last, which is over the DSS part's own)."""


def phase_of(t: int, steps: int) -> str:
    """The third of training (``early``, ``middle``, ``late``) that a window starting at base step ``t`` is in."""
    return PHASES[min(len(PHASES) - 1, 3 * t // steps)]


def spread_by_phase(windows: list[dict[str, Any]], steps: int) -> dict[str, dict[str, Any]]:
    """Per training phase: windows, connected, and the min / 10% / 50% / 90% / max of each length in ``PARTS``."""
    grouped: dict[str, list[dict[str, Any]]] = {phase: [] for phase in PHASES}
    for w in windows:
        grouped[phase_of(w["t"], steps)].append(w)
    spread = {}
    for phase, members in grouped.items():
        if not members:
            continue
        linked = [w for w in members if w["connected"]]
        entry: dict[str, Any] = {"windows": len(members), "connected": len(linked)}
        for key in PARTS:
            values = [float(w[key]) for w in linked if key in w]
            if values:
                entry[key] = _quantiles(values)
        spread[phase] = entry
    return spread


def _summarize(run: Run, cfg: TargetsConfig) -> dict[str, Any]:
    records = sorted(run.records("shard"), key=lambda r: (r["label"], r["seed"]))  # whichever rank wrote them
    windows = [w for record in records for w in record["per_window"]]
    by_step: dict[int, list[float]] = defaultdict(list)
    for w in windows:
        if w["connected"]:
            by_step[w["t"]].append(float(w["normalized_length"]))
    total, connected = len(windows), sum(bool(w["connected"]) for w in windows)
    seconds = sum(r["seconds"] for r in records)
    summary = {
        "shards": len(records), "windows": total, "connected": connected,
        "pairs_per_minute": 60 * total / seconds if seconds else math.nan, "seconds": seconds,
        "mean_normalized_length": {t: sum(v) / len(v) for t, v in sorted(by_step.items())},
    }  # fmt: skip
    for t, lengths in sorted(by_step.items()):
        run.log_scalars("geodesic/targets", {"normalized_length": sum(lengths) / len(lengths),
                                             "max_normalized_length": max(lengths)}, t)  # fmt: skip
    parts = {key: [float(w[key]) for w in windows if w["connected"] and key in w] for key in PARTS}
    _histograms(run, cfg, parts)
    _plot(run, cfg, records)
    rows = "\n".join(f"| {t} | {len(v)} | {sum(v) / len(v):.4f} | {max(v):.4f} |" for t, v in sorted(by_step.items()))
    spread = "\n".join(f"| {key} | {_percentiles(values)} |" for key, values in parts.items() if values)
    summary["percentiles"] = {key: _quantiles(values) for key, values in parts.items() if values}
    summary["by_phase"] = spread_by_phase(windows, cfg.steps)
    phases = "\n".join(
        f"| {phase} | {entry['connected']}/{entry['windows']} | "
        + " | ".join(_percentiles(entry[key]) if key in entry else "-" for key in PARTS) + " |"
        for phase, entry in summary["by_phase"].items()
    )  # fmt: skip
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
        "By training phase (the third of the N base steps the window starts in), min / 10% / 50% / 90% / max:\n\n"
        "| phase | connected | normalized length | descent leg | inside, over the chord | inside, over its own chord "
        "|\n"
        f"|---|---:|---|---|---|---|\n{phases}\n\n"
        "| t (base step) | connected windows | mean normalized length | max |\n|---:|---:|---:|---:|\n"
        f"{rows}\n\n![the spread of the lengths along training](plots/length_vs_step.png)\n",
    )
    return summary


def _quantiles(values: list[float]) -> list[float]:
    ordered = torch.tensor(sorted(values), dtype=torch.float64)
    return torch.quantile(ordered, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)).tolist()


def _percentiles(values: list[float]) -> str:
    return " / ".join(f"{v:.4f}" for v in _quantiles(values))


def _histograms(run: Run, cfg: TargetsConfig, parts: dict[str, list[float]]) -> None:
    """TensorBoard histograms ``geodesic/targets/<rule>/<length>`` of the connected windows' lengths."""
    rule = f"between_q{cfg.q:g}" if cfg.level == "between" else cfg.level
    for key, values in parts.items():
        if values:
            run.writer.add_histogram(f"geodesic/targets/{rule}/{key}", torch.tensor(values, dtype=torch.float64), 0)


FLOOR = 1e-5
"""Excess lengths below this are drawn at it: a straight path (excess 0) has no place on a log axis."""


def _plot(run: Run, cfg: TargetsConfig, records: list[dict[str, Any]]) -> None:
    """The spread of the lengths along training: ``plots/length_vs_step.png``.

    Three panels (normalized length, descent leg, inside part over its own chord), each the excess over a straight
    path on a log axis against the window start: one jittered point per window, a box per training phase, the
    windows not connected marked at the top of the first panel.
    """
    panels = (("normalized_length", 1.0, "normalized length - 1"), ("descent_length", 0.0, "descent leg / chord"),
              ("inside_normalized_length", 1.0, "inside part / its chord - 1"))  # fmt: skip
    windows = [w for record in records for w in record["per_window"]]
    generator = torch.Generator().manual_seed(0)
    fig, axes = subplots(1, len(panels), figsize=(12, 3.8), sharex=True)
    width = max(cfg.steps / 3, 1)
    for ax, (key, straight, label) in zip(axes, panels):
        points = [(w["t"], max(float(w[key]) - straight, FLOOR)) for w in windows if w["connected"] and key in w]
        if points:
            ts, ys = zip(*points)
            jitter = (torch.rand(len(ts), generator=generator) - 0.5) * 0.4 * cfg.stride
            ax.plot([t + float(j) for t, j in zip(ts, jitter)], ys, "o", ms=3, alpha=0.5, color="tab:blue")
            groups = [[y for t, y in points if phase_of(t, cfg.steps) == phase] for phase in PHASES]
            filled = [(i, g) for i, g in enumerate(groups) if g]
            ax.boxplot([g for _, g in filled], positions=[(i + 0.5) * width for i, _ in filled], widths=0.6 * width,
                       showfliers=False, manage_ticks=False,
                       boxprops={"alpha": 0.6}, medianprops={"color": "tab:orange"})  # fmt: skip
        ax.set_yscale("log")
        ax.set_ylim(FLOOR / 2, max(10.0, ax.get_ylim()[1]))
        ax.set_xlabel("window start t (base step)")
        ax.set_title(label, fontsize=9)
    missed = [w["t"] for w in windows if not w["connected"]]
    if missed:
        top = axes[0].get_ylim()[1]
        axes[0].plot(missed, [top] * len(missed), "x", color="tab:red", ms=6, clip_on=False, label="not connected")
        axes[0].legend(fontsize=7, loc="lower right")
    rule = f"between q={cfg.q:g}" if cfg.level == "between" else cfg.level
    names = [f"{t.name} ({t.options['activation']})" if "activation" in t.options else t.name for t in cfg.tasks]
    tasks = ", ".join(names)
    fig.suptitle(f"{tasks}: {cfg.optimizer}, level rule {rule}, "
                 f"T = {cfg.window}; boxes: thirds of training; excess under {FLOOR:g} drawn at {FLOOR:g}",
                 fontsize=10)  # fmt: skip
    save_figure(fig, run.subdir("plots") / "length_vs_step.png")
