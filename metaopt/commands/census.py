"""``metaopt census``: is there level-set curvature between iterates of an optimizer, and would following it pay?

For every task, base optimizer and seed (one *unit*, the unit of resumption), the base run's iterates theta_0..theta_N
are recorded (:func:`metaopt.targets.base_trajectory`); for every window length T, the non-overlapping windows
(theta_t, theta_{t+T}) (at most ``max_windows`` of them, evenly spaced) are checked:

- the level is the higher end's evaluation loss, max(F(theta_t), F(theta_{t+T})) (1 + slack);
- the chord's certified peak over the level (:func:`~metaopt.targets.census.chord_barrier`); a window whose chord
  leaves the level set is *blocked*;
- for blocked windows (at most ``max_connects`` per unit, spread over the levels), the inside length: the DSS path
  inside the level set over its own chord (:func:`~metaopt.targets.census.inside_length`), with the low-level bead
  settings of the sweeps; there is no projection leg (the level holds both ends), so the length is curvature alone;
- for curved windows (inside length above ``curved``), the oracle: the window loss (the sum of F over the window's T
  steps) of the base optimizer's own iterates, of the chord and of the geodesic at constant speed, and of the chord
  and the geodesic re-timed to the optimizer's progress.

The report bins the windows by level over the run's final loss and by T, gives the oracle's paired differences with
95% intervals, and applies the decision rule stated in docs/results.md; ``plots/census.png`` is the figure.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from envs.errors import InvalidValue
from envs.task.registry import make_task
from envs.tooling.config import RunOptions, TaskConfig, check_range
from envs.tooling.plots import save_figure, subplots
from envs.tooling.runs import Run
from envs.training.optim import list_optimizers
from geodesics import CurveConfig, DSSConfig, ParamSpace
from metaopt.targets.build import base_trajectory, window_starts
from metaopt.targets.census import chord_barrier, inside_length, progress, retime, window_loss

__all__ = ["BaseOptimizer", "CensusConfig", "run_census"]

PARTNERS = ("own", "independent")
"""Where the far end of a window comes from (``CensusConfig.partner``)."""
INDEPENDENT_SEED = 1000
"""Seed offset of the independent run that ``partner: independent`` takes far ends from."""
LEVEL_BINS = (1.0, 1.5, 3.0, 10.0, math.inf)
"""Edges of the bins of level / final loss in the report."""


def _low_level_dss() -> DSSConfig:
    return DSSConfig.using(
        "greedy", max_rounds=16, max_steps=2000, lr=0.005, finish="lbfgs", finish_steps=2000, restarts=2
    )


@dataclass
class BaseOptimizer:
    """A base optimizer of the census: a registered optimizer and its learning rate per task."""

    label: str = "adam"
    """Its name in records and tables."""
    name: str = "adam"
    """A registered optimizer (``envs.list_optimizers()``)."""
    lr: dict[str, float] = field(default_factory=dict)
    """Learning rate per task name; a task not named here runs at its recipe's rate."""


@dataclass
class CensusConfig(RunOptions):
    """Configuration of ``metaopt census``."""

    name: str = "census"
    """Prefix of the run directory name."""
    tasks: list[TaskConfig] = field(default_factory=lambda: [TaskConfig(name="poly_cubic")])
    """The tasks, each with its options (a label ``name-activation`` is used when it sets ``activation``)."""
    optimizers: list[BaseOptimizer] = field(default_factory=lambda: [BaseOptimizer()])
    """The base optimizers."""
    seeds: int = 2
    """Base runs per task and optimizer (seeds 0 .. seeds - 1)."""
    steps: dict[str, int] = field(default_factory=dict)
    """Base-run length per task name (a task not named here runs its recipe's steps)."""
    windows: list[int] = field(default_factory=lambda: [20, 50, 100, 200, 400])
    """Window lengths T."""
    max_windows: int = 12
    """Windows checked per run and T at most (evenly spaced among the non-overlapping ones)."""
    max_connects: int = 8
    """Blocked windows connected by DSS per unit at most (spread over the levels; the others are counted only)."""
    slack: float = 0.01
    """Margin of the level over the higher end: L = max(F(theta_t), F(theta_t+T)) (1 + slack)."""
    curved: float = 1.05
    """Inside length above which a window counts as curved (and gets the oracle)."""
    curve: CurveConfig = field(default_factory=CurveConfig)
    """How the chord's peak is certified."""
    dss: DSSConfig = field(default_factory=_low_level_dss)
    """DSS settings inside the level set (default: the low-level sweeps' bead settings)."""
    partner: str = "own"
    """The far end theta_b of a window: ``own`` (theta_t+T of the same run) or ``independent`` (the iterate of an
    independent run of the same optimizer, seed + 1000, whose evaluation loss is nearest F(theta_t+T): the same level,
    another basin's way down)."""
    references: dict[str, list[list[float]]] = field(default_factory=dict)
    """Independently trained pairs per task: ``[L0, normalized length]`` rows from the sweeps, for the figure (their
    levels over the median final loss of the first optimizer's runs, the recipe that trained the pairs)."""

    def __post_init__(self) -> None:
        if not self.tasks or not self.optimizers:
            raise ValueError("tasks and optimizers must each name at least one entry")
        check_range(self, "seeds", low=1, integer=True)
        check_range(self, "windows", low=1, integer=True)
        check_range(self, "max_windows", low=1, integer=True)
        check_range(self, "max_connects", low=0, integer=True)
        check_range(self, "slack", low=0, low_open=True)
        check_range(self, "curved", low=1, low_open=True)
        if self.partner not in PARTNERS:
            message = f"must be one of {', '.join(PARTNERS)}, got {self.partner!r}"
            raise InvalidValue(type(self), "partner", self.partner, message)
        for index, optimizer in enumerate(self.optimizers):
            if optimizer.name not in list_optimizers():
                message = f"must be a registered optimizer ({', '.join(list_optimizers())}), got {optimizer.name!r}"
                raise InvalidValue(type(self), f"optimizers.{index}.name", optimizer.name, message)
        for task, steps in self.steps.items():
            if steps < max(self.windows):
                message = f"must be at least the longest window ({max(self.windows)}), got {steps}"
                raise InvalidValue(type(self), f"steps.{task}", steps, message)


def _label(task: TaskConfig) -> str:
    activation = task.options.get("activation")
    return f"{task.name}-{activation}" if activation else task.name


def _spread(items: list[Any], count: int) -> list[Any]:
    """At most ``count`` of ``items``, evenly spaced, first and last included."""
    if len(items) <= count:
        return list(items)
    if count == 1:
        return [items[0]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def census_unit(cfg: CensusConfig, task_cfg: TaskConfig, optimizer: BaseOptimizer, seed: int) -> dict[str, Any]:
    """One base run and all its windows: the record ``metaopt census`` appends (pure: writes nothing)."""
    task = make_task(task_cfg.name, device=cfg.device, dtype=cfg.dtype, **task_cfg.options)
    problem = task.instance(seed)
    space = ParamSpace.from_task(problem)
    lr = optimizer.lr.get(task_cfg.name, problem.recipe.lr)
    steps = cfg.steps.get(task_cfg.name, problem.recipe.steps)
    iterates, _ = base_trajectory(problem, seed, optimizer.name, lr, steps)
    losses = space.batched_eval_loss(iterates).double()
    final = float(losses[-1])
    others, other_losses = iterates, losses
    if cfg.partner == "independent":
        others, _ = base_trajectory(problem, seed + INDEPENDENT_SEED, optimizer.name, lr, steps)
        other_losses = space.batched_eval_loss(others).double()
    ends: dict[int, int] = {}  # far end of the window ending at step t + T: its index among ``others``
    windows: list[dict[str, Any]] = []
    for window in cfg.windows:
        if window > steps:
            continue
        for t in _spread(window_starts(steps, window, window), cfg.max_windows):
            end = t + window
            if cfg.partner == "independent":
                end = ends.setdefault(end, int((other_losses - losses[t + window]).abs().argmin()))
            a, b = iterates[t], others[end]
            level = max(float(losses[t]), float(other_losses[end])) * (1 + cfg.slack)
            check = chord_barrier(space, a, b, level, cfg.curve)
            windows.append({
                "T": window, "t": t, "end": end, "start_loss": float(losses[t]), "end_loss": float(other_losses[end]),
                "level": level, "level_over_final": level / final if final > 0 else math.inf,
                "chord_peak": check.peak, "chord_ratio": check.ratio, "blocked": check.blocked,
                "chord_evaluations": check.evaluations, "inside_length": 1.0 if not check.blocked else None,
            })  # fmt: skip
    blocked = [w for w in windows if w["blocked"]]
    chosen = {id(w) for w in _spread(sorted(blocked, key=lambda w: w["level"]), cfg.max_connects)}
    for w in blocked:
        if id(w) not in chosen:
            w["reason"] = "max_connects"
            continue
        a, b = iterates[w["t"]], others[w["end"]]
        length, string = inside_length(space, a, b, w["level"], cfg.dss)
        assert string is not None
        w.update({"inside_length": length, "connected": string.connected, "reason": string.reason,
                  "num_beads": string.num_beads})  # fmt: skip
        if string.connected and length > cfg.curved:
            own = iterates[w["t"] : w["t"] + w["T"] + 1]
            w["oracle"] = oracle(space, own, string.beads)
    return {
        "kind": "unit", "task": _label(task_cfg), "optimizer": optimizer.label, "seed": seed, "lr": lr,
        "steps": steps, "final_loss": final, "partner": cfg.partner, "windows": windows,
    }  # fmt: skip


def oracle(space: ParamSpace, own: torch.Tensor, geodesic: torch.Tensor) -> dict[str, float]:
    """Window losses of the iterates ``own (T + 1, P)`` and of the chord and the ``geodesic`` beads on two clocks.

    The chord and the geodesic run at constant speed and on the optimizer's clock (:func:`progress` of ``own``).
    """
    steps = len(own) - 1
    constant = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    clock = progress(own)
    geodesic = geodesic.to(own.dtype)
    chord = torch.stack([geodesic[0], geodesic[-1]])  # the window's ends (theta_b from another run: not own[-1])
    return {
        "own": window_loss(space, own),
        "chord_constant": window_loss(space, retime(chord, constant)),
        "geodesic_constant": window_loss(space, retime(geodesic, constant)),
        "chord_retimed": window_loss(space, retime(chord, clock)),
        "geodesic_retimed": window_loss(space, retime(geodesic, clock)),
    }


def _units(cfg: CensusConfig) -> list[tuple[TaskConfig, BaseOptimizer, int]]:
    return [(task, optimizer, seed) for task in cfg.tasks for optimizer in cfg.optimizers for seed in range(cfg.seeds)]


def _key(task: TaskConfig, optimizer: BaseOptimizer, seed: int) -> str:
    return f"{_label(task)}/{optimizer.label}/{seed}"


def run_census(cfg: CensusConfig) -> dict[str, Any]:
    """Run (or continue) the census; returns the summary the report is made from."""
    for task in cfg.tasks:  # a bad task or missing data: refused before the run directory exists
        make_task(task.name, device=cfg.device, dtype=cfg.dtype, **task.options).load()
    run = Run.create(cfg.name, cfg, cfg.out)
    run.announce(tensorboard=False)
    with run:
        done = {r["key"] for r in run.records("unit")}
        units = _units(cfg)
        with tqdm(total=len(units), initial=sum(_key(*u) in done for u in units), desc="census", unit="run") as bar:
            for task, optimizer, seed in units:
                key = _key(task, optimizer, seed)
                if key in done:
                    continue
                run.append_record({**census_unit(cfg, task, optimizer, seed), "key": key})
                bar.update(1)
        records = [_numbers(r) for r in sorted(run.records("unit"), key=lambda r: r["key"])]
        summary = summarize(cfg, records)
        run.write_text("report.md", report(cfg, summary))
        _figure(cfg, records, run)
    print(f"{summary['windows']} windows: {summary['blocked']} blocked, {summary['curved']} curved "
          f"(inside length > {cfg.curved:g}); H1 {'holds' if summary['H1'] else 'fails'}, "
          f"H2 {'holds' if summary['H2'] else 'fails'}")  # fmt: skip
    print(f"report: {run.path / 'report.md'}\nfigure: {run.path / 'plots' / 'census.png'}")
    return summary


def _numbers(record: dict[str, Any]) -> dict[str, Any]:
    """A unit record with the non-finite floats the run directory stores as text (``"nan"``, ``"inf"``) as floats."""

    def number(value: Any) -> Any:
        return float(value) if isinstance(value, str) and value in ("nan", "inf", "-inf") else value

    windows = [{key: number(value) for key, value in w.items()} for w in record["windows"]]
    return {**record, "windows": windows, "final_loss": number(record["final_loss"])}


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and a 95% t-interval (normal beyond 30 values; the half-width is NaN for fewer than two)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    quantile = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}.get(len(values), 2.0)
    half = quantile * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def summarize(cfg: CensusConfig, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by (level bin, T), the oracle's paired differences, and the decision rule's verdicts H1 and H2."""
    windows = [w for r in records for w in r["windows"]]
    table: dict[tuple[int, int], dict[str, int]] = {}
    for w in windows:
        last = len(LEVEL_BINS) - 2  # a final loss of 0 puts a window's level at infinity: the last bin
        bin_ = next((i for i, edge in enumerate(LEVEL_BINS[1:]) if w["level_over_final"] < edge), last)
        cell = table.setdefault((bin_, w["T"]), {"windows": 0, "blocked": 0, "measured": 0, "curved": 0})
        cell["windows"] += 1
        cell["blocked"] += bool(w["blocked"])
        measured = _measured(w)
        cell["measured"] += measured
        cell["curved"] += measured and w["inside_length"] > cfg.curved
    curved = [w for w in windows if "oracle" in w]
    contrasts = {}
    for name, (left, right) in {
        "geodesic - chord, re-timed": ("geodesic_retimed", "chord_retimed"),
        "geodesic re-timed - own path": ("geodesic_retimed", "own"),
        "geodesic - chord, constant speed": ("geodesic_constant", "chord_constant"),
        "chord re-timed - own path": ("chord_retimed", "own"),
    }.items():
        relative = [(w["oracle"][left] - w["oracle"][right]) / w["oracle"][right] for w in curved]
        contrasts[name] = _interval(relative) if relative else (math.nan, math.nan, math.nan)
    # H1: at some T <= 100, at least 20% of the windows measured are curved
    share = {T: _share(windows, T, cfg.curved) for T in sorted({w["T"] for w in windows}) if T <= 100}
    h1 = any(s >= 0.2 for s in share.values())
    # H2: re-timed geodesic below both the re-timed chord and the own path by more than 5% (paired 95% interval)
    h2 = all(contrasts[k][2] < -0.05 for k in ("geodesic - chord, re-timed", "geodesic re-timed - own path"))
    return {
        "windows": len(windows), "blocked": sum(bool(w["blocked"]) for w in windows),
        "curved": sum(1 for w in windows if (w.get("inside_length") or 1.0) > cfg.curved),
        "table": table, "contrasts": contrasts, "oracle_windows": len(curved), "share_curved": share,
        "H1": h1, "H2": h2, "units": len(records),
    }  # fmt: skip


def _measured(window: dict[str, Any]) -> bool:
    """Whether a window's inside length is known (unblocked, or blocked and connected)."""
    length = window.get("inside_length")
    return length is not None and not math.isnan(length)


def _share(windows: list[dict[str, Any]], window: int, curved: float) -> float:
    """Share of the windows of length ``window`` whose inside length exceeds ``curved``.

    Blocked windows left unmeasured (``max_connects``) count as not curved, so the share is a lower bound.
    """
    mine = [w for w in windows if w["T"] == window]
    return sum((w.get("inside_length") or 1.0) > curved for w in mine) / len(mine) if mine else 0.0


def report(cfg: CensusConfig, summary: dict[str, Any]) -> str:
    """The census report: counts by level and T, the shares, the oracle table, the verdicts."""
    names = ["1-1.5", "1.5-3", "3-10", "> 10"]
    rows = [
        f"| {names[b]} | {T} | {c['windows']} | {c['blocked']} | {c['measured']} | {c['curved']} |"
        for (b, T), c in sorted(summary["table"].items())
    ]
    oracle = [
        f"| {name} | {mean:+.2%} | [{low:+.2%}, {high:+.2%}] |"
        for name, (mean, low, high) in summary["contrasts"].items()
    ]
    shares = ", ".join(f"T = {T}: {s:.1%}" for T, s in summary["share_curved"].items())
    return (
        "# Curvature census of optimizer windows\n\n"
        f"{summary['units']} base runs, {summary['windows']} windows; level = max(F(theta_t), F(theta_t+T)) "
        f"(1 + {cfg.slack:g}); curved: inside length > {cfg.curved:g}.\n\n"
        "| level / final loss | T | windows | blocked (chord leaves the level) | inside length measured | curved |\n"
        "|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
        f"Share of curved windows (H1 needs 20% at some T <= 100): {shares or 'none'}. **H1 "
        f"{'holds' if summary['H1'] else 'fails'}.**\n\n"
        f"## Oracle ({summary['oracle_windows']} curved windows, paired)\n\n"
        "Relative window loss, mean and 95% interval.\n\n"
        "| contrast | mean | 95% interval |\n|---|---:|---|\n" + "\n".join(oracle) + "\n\n"
        f"H2 needs the re-timed geodesic below both the re-timed chord and the own path by more than 5%: **H2 "
        f"{'holds' if summary['H2'] else 'fails'}.**\n"
    )


def _figure(cfg: CensusConfig, records: list[dict[str, Any]], run: Run) -> None:
    """Normalized length - 1 (log, floored) against level / final loss: windows by T, independent pairs apart."""
    floor = 1e-4
    fig, ax = subplots(figsize=(7, 4.5))
    markers = "os^Dv<>"
    for i, window in enumerate(cfg.windows):
        measured = [w for r in records for w in r["windows"] if w["T"] == window and _measured(w)]
        points = [(w["level_over_final"], max(floor, w["inside_length"] - 1)) for w in measured]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, s=12, marker=markers[i % len(markers)], alpha=0.5, label=f"windows, T = {window}")
    finals: dict[str, list[float]] = {}  # the pairs' endpoints were trained by the recipe: the first optimizer's runs
    for r in records:
        if r["optimizer"] == cfg.optimizers[0].label:
            finals.setdefault(r["task"], []).append(r["final_loss"])
    for task, rows in cfg.references.items():
        final = statistics.median(finals.get(task, [math.nan]))
        if rows and math.isfinite(final):
            ax.scatter([l0 / final for l0, _ in rows], [max(floor, length - 1) for _, length in rows], s=40,
                       marker="*", label=f"independent pairs, {task}")  # fmt: skip
    ax.axhline(floor, color="grey", linestyle=":", label="straight (floor)")
    ax.axhline(cfg.curved - 1, color="black", linestyle="--", linewidth=0.8, label=f"curved: length > {cfg.curved:g}")
    ax.set(xscale="log", yscale="log", xlabel="level / final loss of the run", ylabel="normalized length - 1 (inside)",
           title="Curvature between optimizer iterates")  # fmt: skip
    ax.legend(fontsize=7, loc="upper right")
    save_figure(fig, run.subdir("plots") / "census.png")
