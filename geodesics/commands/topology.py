"""``geodesics topology``: the level-set topology experiments of the DSS paper's Section 2, as a family of sweeps.

One integer option of the task (``vary``: the student's ``depth`` or hidden ``width``) takes each of ``values``, and
for each value a full ``geodesics sweep`` runs as a sub-run in ``<run>/<vary>-<value>/``: N fresh pairs per level
L0, trained below L0 and connected by DSS. What comes back is the share of pairs connected, the normalized length and
the beads, per (value, L0). Two configs ship:

* ``topology/linear.yaml``: deep *linear* students (``activation=identity``) of several depths on a linear teacher.
  Proposition 2.2: their level sets are connected at every level, so every pair should connect.
* ``topology/relu_width.yaml``: one-hidden-layer ReLU students of growing width on a ReLU teacher. Theorem 2.4 and
  Corollary 2.5: the energy gap shrinks as the hidden layer widens (O(m^(-1/n))), so pairs should connect more
  often, and more directly, as the width grows.

The unit of resumption is a sub-run's group of pairs (the sweep's own); a value whose sub-run finished leaves one
``variant`` record in the top run, and a rerun with the same ``out=`` skips it without opening it. The top run writes
``results.csv`` (one row per value and level), ``report.md`` (tables with one row per value), ``plots/topology.png``
(share connected, length and beads against the value and against L0) and TensorBoard scalars under
``geodesic/topology/``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs.errors import ConfigError, InvalidValue
from envs.task.registry import get_task_class, make_task
from envs.tooling import distributed
from envs.tooling.config import RunOptions, TaskConfig, check_range
from envs.tooling.plots import save_figure, subplots
from envs.tooling.runs import Run
from geodesics.alignment import check_alignment
from geodesics.commands.report import csv_text
from geodesics.commands.sweep import SweepConfig, run_sweep
from geodesics.finders import DSSConfig
from geodesics.space import check_strategy

__all__ = ["TopologyConfig", "plot_topology", "run_topology", "variant_config"]

_METRICS = ["share_connected", "normalized_length_mean", "num_beads_mean", "max_loss_mean"]
_COLUMNS = ["threshold", "pairs", "trained", "connected", "share_connected", "normalized_length_mean",
            "normalized_length_se", "num_beads_mean", "num_beads_se", "max_loss_mean", "seconds"]  # fmt: skip


@dataclass
class TopologyConfig(RunOptions):
    """Configuration of ``geodesics topology``."""

    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="teacher_student"))
    """The task; its option ``vary`` is set to each of ``values`` in turn (the other options stay as given)."""
    name: str = "topology"
    """Prefix of the run directory name."""
    vary: str = "width"
    """The integer task option swept across sub-runs: ``width`` (hidden units) or ``depth`` (hidden layers)."""
    values: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32])
    """The values of ``vary``, one sub-run (a full sweep) each, in the order of the tables."""
    thresholds: list[float] = field(default_factory=lambda: [0.1, 0.05, 0.02])
    """The levels L0 (evaluation loss) of every sub-run."""
    pairs: int = 4
    """Independent pairs of models per (value, level)."""
    concurrent: int = 4
    """Pairs trained and connected together in one batch (the unit of resumption inside a sub-run)."""
    seed: int = 0
    """Base seed of the sub-runs' pairs (the same seeds for every value, see ``geodesics sweep``)."""
    train_steps: int = 0
    """Step budget to train each endpoint below L0 (0: five times the task's recipe steps)."""
    dss: DSSConfig = field(default_factory=DSSConfig)
    """Path finder (``dss.finder``: name and options), shared budgets and checks, the same for every value."""
    align: str = "none"
    """Before connecting each pair: ``none``, or ``weight_matching`` (B's hidden units permuted to match A's)."""
    strategy: str = "auto"
    """How a stack of models is evaluated (``geodesics.ParamSpace``): ``auto`` (``loop`` on CPU, ``vmap`` on CUDA),
    ``loop`` (exact: each model as if alone), ``vmap``, or ``bmm`` (MLP tasks only: explicit batched matmuls and a
    hand-written backward, several times faster than the loop on CPU; agrees with it to rounding)."""

    def __post_init__(self) -> None:
        check_alignment(self)
        check_strategy(self)
        check_range(self, "values", low=1, integer=True)
        if len(set(self.values)) != len(self.values):
            raise InvalidValue(type(self), "values", self.values, f"must name each value once, got {self.values!r}")
        check_range(self, "thresholds", low=0, low_open=True)
        check_range(self, "pairs", low=1, integer=True)
        check_range(self, "concurrent", low=1, integer=True)
        check_range(self, "seed", low=0, integer=True)
        check_range(self, "train_steps", low=0, integer=True)


def variant_config(cfg: TopologyConfig, value: int, out: str | Path) -> SweepConfig:
    """The sweep of one value: the task with ``vary=value``, everything else from ``cfg``, written at ``out``."""
    options = {**cfg.task.options, cfg.vary: int(value)}
    return SweepConfig(
        task=TaskConfig(name=cfg.task.name, options=options), name=f"sweep-{cfg.vary}{value}",
        thresholds=list(cfg.thresholds), pairs=cfg.pairs, concurrent=cfg.concurrent, seed=cfg.seed,
        train_steps=cfg.train_steps, dss=dataclasses.replace(cfg.dss), align=cfg.align, strategy=cfg.strategy,
        device=cfg.device, dtype=cfg.dtype, out=str(out), threads=cfg.threads,
    )  # fmt: skip


def _check_vary(cfg: TopologyConfig) -> None:
    """``vary`` must be an integer option of the task: a clear error before anything is written."""
    options = {f.name: f for f in dataclasses.fields(get_task_class(cfg.task.name).Options)}
    kind = options[cfg.vary].type if cfg.vary in options else None
    if kind not in (int, "int"):
        valid = ", ".join(name for name, f in options.items() if f.type in (int, "int"))
        raise ConfigError(
            f"bad value for vary: vary must be an integer option of task {cfg.task.name} ({valid}), got {cfg.vary!r}"
        )


def _number(value: Any) -> Any:
    """A value read back from a record: the strings ``"nan"``/``"inf"`` (JSON has no literal for them) as floats."""
    return float(value) if isinstance(value, str) else value


def run_topology(cfg: TopologyConfig) -> list[dict[str, Any]]:
    """Run (or continue) the experiment; returns one row per (value, level), as in ``results.csv``."""
    _check_vary(cfg)
    for value in cfg.values:  # every variant's options must be valid before anything is written
        make_task(cfg.task.name, **{**cfg.task.options, cfg.vary: int(value)})
    run = Run.create(f"{cfg.name}-{cfg.task.name}-{cfg.vary}", cfg, cfg.out, shared=True)
    main = distributed.is_main()
    run.announce()
    with run:
        done = {int(r["value"]) for r in run.records("variant")}
        for value in cfg.values:
            if value in done:
                continue
            started = time.perf_counter()
            sub = run.path / f"{cfg.vary}-{value}"
            rows = run_sweep(variant_config(cfg, value, sub))
            if not main:
                continue
            num_params = make_task(cfg.task.name, **{**cfg.task.options, cfg.vary: int(value)}).num_params
            record = {"kind": "variant", "vary": cfg.vary, "value": int(value), "num_params": num_params,
                      "sub_run": sub.name, "seconds": time.perf_counter() - started, "rows": rows}  # fmt: skip
            run.append_record(record)
            for row in rows:
                run.log_scalars(f"geodesic/topology/L0_{row['threshold']:g}", {k: row[k] for k in _METRICS}, value)
        if not main:
            return []
        variants = {int(r["value"]): r for r in run.records("variant")}
        table = [_row(cfg.vary, variants[v], row) for v in cfg.values for row in variants[v]["rows"]]
        run.write_text("results.csv", csv_text(table))
        run.write_text("report.md", _report(cfg, table, variants))
        figure = plot_topology(table, cfg.vary, run.subdir("plots") / "topology.png", title=cfg.task.name)
    print(run.path.joinpath("report.md").read_text())
    print(f"plot: {figure}")
    return table


def _row(vary: str, variant: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """One line of ``results.csv``: the value, its parameter count, then the sweep's row in the sweep's order."""
    keys = [k for k in _COLUMNS if k in row] + sorted(set(row) - set(_COLUMNS))  # records store keys sorted
    return {vary: variant["value"], "num_params": variant["num_params"], **{k: _number(row[k]) for k in keys}}


def _cell(row: dict[str, Any], key: str) -> str:
    if not row["connected"]:
        return "–"  # nothing connected: nothing to average
    mean, se = row[f"{key}_mean"], row[f"{key}_se"]
    return f"{mean:.3f}" if math.isnan(se) else f"{mean:.3f} ± {se:.3f}"


def _report(cfg: TopologyConfig, table: list[dict[str, Any]], variants: dict[int, dict[str, Any]]) -> str:
    levels = sorted({r["threshold"] for r in table}, reverse=True)
    head = f"| {cfg.vary} | params | " + " | ".join(f"L0 = {t:g}" for t in levels) + " |"
    rule = "|---:|---:|" + "---:|" * len(levels)
    by = {(r[cfg.vary], r["threshold"]): r for r in table}
    options = ", ".join(f"{k}={v}" for k, v in cfg.task.options.items() if k != cfg.vary)
    lines = [
        f"# geodesics topology: {cfg.task.name}, {cfg.vary} varied\n",
        f"Task options: {options or 'defaults'}; {cfg.vary} in {list(cfg.values)}. {cfg.pairs} pairs per "
        f"({cfg.vary}, L0) from seeds {cfg.seed}...; path finder `{cfg.dss.finder.name}`, at most "
        f"{cfg.dss.max_rounds} rounds of "
        f"{cfg.dss.max_steps} steps per bead; align={cfg.align}.\n",
    ]
    sections = [
        ("Pairs connected / pairs trained below L0", lambda r: f"{r['connected']}/{r['trained']} of {r['pairs']}"),
        ("Normalized length (mean ± s.e. over connected pairs)", lambda r: _cell(r, "normalized_length")),
        ("Beads, endpoints included (mean ± s.e. over connected pairs)", lambda r: _cell(r, "num_beads")),
    ]
    for title, cell in sections:
        lines += [f"## {title}\n", head, rule]
        for value in cfg.values:
            cells = " | ".join(cell(by[(value, t)]) for t in levels)
            lines.append(f"| {value} | {variants[value]['num_params']} | {cells} |")
        lines.append("")
    total = sum(v["seconds"] for v in variants.values())
    subs = ", ".join(f"[{v['sub_run']}]({v['sub_run']}/report.md)" for v in variants.values())
    lines.append(f"Sub-runs (one `geodesics sweep` each): {subs}. Wall time: {total:.1f} s.\n")
    lines.append("![topology](plots/topology.png)\n")
    return "\n".join(lines)


def plot_topology(table: list[dict[str, Any]], vary: str, path: str | Path, title: str = "") -> Path:
    """Share connected, normalized length and beads against ``vary`` (one line per L0) and against L0 (per value)."""
    values = sorted({r[vary] for r in table})
    levels = sorted({r["threshold"] for r in table})
    panels = [("share_connected", "share of pairs connected"), ("normalized_length_mean", "normalized length"),
              ("num_beads_mean", "beads")]  # fmt: skip
    fig, axes = subplots(2, 3, figsize=(14, 7.5), layout="constrained")
    for col, (key, label) in enumerate(panels):
        for level in levels:
            rows = sorted((r for r in table if r["threshold"] == level), key=lambda r: r[vary])
            _curve(axes[0, col], [r[vary] for r in rows], rows, key, f"L0 = {level:g}")
        for value in values:
            rows = sorted((r for r in table if r[vary] == value), key=lambda r: r["threshold"])
            _curve(axes[1, col], [r["threshold"] for r in rows], rows, key, f"{vary} = {value}")
        axes[0, col].set_xscale("log", base=2)
        axes[0, col].set_xticks(values, [str(v) for v in values])
        axes[0, col].minorticks_off()
        axes[0, col].set_xlabel(vary)
        axes[1, col].set_xscale("log")
        axes[1, col].set_xticks(levels, [f"{level:g}" for level in levels])
        axes[1, col].minorticks_off()
        axes[1, col].set_xlabel("threshold L0 (evaluation loss)")
        for row in (0, 1):
            axes[row, col].set_ylabel(label)
            if key == "share_connected":
                axes[row, col].set_ylim(-0.05, 1.05)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle(f"{title}: level-set topology as {vary} varies (length and beads over connected pairs)")
    return save_figure(fig, path)


def _curve(ax: Any, x: list[float], rows: list[dict[str, Any]], key: str, label: str) -> None:
    """One line of a panel: the means, with standard-error bars where there are (length, beads)."""
    y = [r[key] for r in rows]
    se_key = key.replace("_mean", "_se")
    if se_key == key:
        ax.plot(x, y, "o-", ms=4, label=label)
        return
    se = [0.0 if math.isnan(r[se_key]) else r[se_key] for r in rows]  # one connected pair: no bar
    ax.errorbar(x, y, yerr=se, fmt="o-", ms=4, capsize=3, label=label)
