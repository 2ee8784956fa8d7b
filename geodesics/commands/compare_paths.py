"""``geodesics compare-paths``: every path finder on the same pairs of endpoints, under the same budgets.

For each of ``pairs`` pairs, two models are trained below L0 from fresh seeds (as ``geodesics connect`` trains
them), B is aligned to A when ``align`` asks for it, and every finder in ``finders`` connects the same endpoints with
the same settings (``dss``, whose ``max_evaluations`` and ``max_seconds`` are the budget each finder gets). Every
finder's path is certified by the same segment checks, so the columns compare like with like:

* barrier: the certified maximum of the loss along the path above the higher endpoint (``max_loss_upper`` minus the
  endpoint loss; at most L0 minus that loss when connected);
* normalized length, and the points each finder trains (DSS beads, NEB images, the curves' control points, endpoints
  included) beside the vertices of the polyline it is certified on;
* loss evaluations (``ParamSpace.evaluations``: one per model on a batch or on the evaluation set) and gradients
  spent by the finder, and its wall time.

The unit of work is one (pair, finder): each writes its string and one record, so a killed run rerun with the same
``out=`` skips the finished units (the endpoints of a pair are saved once and reloaded). The run writes
``paths.csv`` (one row per unit), ``results.csv`` (one row per finder, over the pairs), ``report.md`` and one plot of
the loss along every finder's path per pair. Under ``torchrun`` the pairs with a unit still to do are shared out
round-robin (a pair's finders stay together, so its endpoints are trained once); rank 0 logs and writes the outputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from envs.errors import InvalidValue
from envs.tooling import distributed
from envs.tooling.config import RunOptions, TaskConfig, check_range
from envs.tooling.runs import Run, atomic_torch_save
from geodesics.alignment import align, check_alignment
from geodesics.commands.preamble import command_space
from geodesics.commands.report import csv_text, log_string
from geodesics.endpoints import train_endpoints
from geodesics.finders import DSSConfig, FinderChoice, connect
from geodesics.finders.base import LEGACY_KEYS
from geodesics.path import BeadString
from geodesics.plots import plot_paths_loss
from geodesics.space import ParamSpace, check_strategy

__all__ = ["ComparePathsConfig", "run_compare_paths", "summarize", "trained_points"]

ALL_FINDERS = ["greedy", "constrained", "neb", "bezier", "polychain"]
"""The built-in finders, compared by default."""

_POINT_KINDS = {"greedy": "beads", "constrained": "beads", "neb": "images"}


def _budgeted() -> DSSConfig:
    return DSSConfig(max_evaluations=200_000, max_seconds=0.0, keep_snapshots=False)


@dataclass
class ComparePathsConfig(RunOptions):
    """Configuration of ``geodesics compare-paths``."""

    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="poly_cubic"))
    """The task whose level set is explored."""
    name: str = "compare-paths"
    """Prefix of the run directory name."""
    threshold: float = 0.05
    """L0: the endpoints are trained below it and every path must stay under it (evaluation loss)."""
    pairs: int = 1
    """Pairs of endpoints; pair p trains models from seeds seed + 2p and seed + 2p + 1."""
    seed: int = 0
    """Base seed of the endpoints."""
    train_steps: int = 0
    """Step budget to train each endpoint below L0 (0: five times the task's recipe steps)."""
    finders: list[Any] = field(default_factory=lambda: list(ALL_FINDERS))
    """Path finders to compare, in the order of the tables: registered names, or ``{name, options}`` for a finder
    with options of its own (``{name: neb, options: {climb: false}}``); each name once."""
    align: str = "none"
    """Before the finders: ``none``, or ``weight_matching`` (B's hidden units permuted to match A's, same function)."""
    strategy: str = "auto"
    """How a stack of models is evaluated (``geodesics.ParamSpace``): ``auto`` (``loop`` on CPU, ``vmap`` on CUDA),
    ``loop`` (exact: each model as if alone), ``vmap``, or ``bmm`` (MLP tasks only: explicit batched matmuls and a
    hand-written backward, several times faster than the loop on CPU; agrees with it to rounding)."""
    dss: DSSConfig = field(default_factory=_budgeted)
    """Settings every finder shares (``dss.finder`` is not read: each entry of ``finders`` is one);
    ``max_evaluations`` and ``max_seconds`` are the budget of each finder on each pair."""

    def __post_init__(self) -> None:
        check_range(self, "threshold", low=0, low_open=True)
        check_range(self, "pairs", low=1, integer=True)
        check_range(self, "seed", low=0, integer=True)
        check_range(self, "train_steps", low=0, integer=True)
        check_alignment(self)
        check_strategy(self)
        names = [_finder_name(entry) for entry in self.finders]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"finders must name each path finder once, got {names}")
        if self.dss.finder != DSSConfig().finder:
            message = "is not read by compare-paths; give a finder's options in finders: [{name: NAME, options: ...}]"
            raise InvalidValue(type(self), "dss.finder", self.dss.finder.name, message)
        for i, entry in enumerate(self.finders):
            try:
                settings = self.settings_of(entry)
            except InvalidValue as exc:  # name the entry of finders
                raise InvalidValue(type(self), f"finders[{i}].{exc.key.removeprefix('finder.')}", exc.value,
                                   exc.message) from None  # fmt: skip
            if not isinstance(entry, str):  # spelled out, as the saved config says every option a finder ran with
                self.finders[i] = {"name": settings.finder.name, "options": dict(settings.finder.options)}

    @staticmethod
    def upgrade_node(node: MutableMapping[str, Any], prefix: str, notes: dict[str, str]) -> None:
        """Read finder options under ``dss`` (the older shape: ``dss.trained_curve.lr``) as the finders' own.

        They become options of the entries of ``finders`` that read them (for config files and saved runs, as
        ``geodesics.finders.base.upgrade_flat`` does for one finder).
        """
        dss = node.get("dss")
        if not isinstance(dss, MutableMapping) or not any(key in dss for key in LEGACY_KEYS):
            return
        finders = [entry for entry in node.get("finders", ALL_FINDERS)]
        for key, readers in LEGACY_KEYS.items():
            if key not in dss:
                continue
            value = dss.pop(key)
            notes[f"{prefix}dss.{key}"] = f"{prefix}finders[{'|'.join(readers)}].options"
            for i, entry in enumerate(finders):
                name = _finder_name(entry)
                if name not in readers:
                    continue
                options = {} if isinstance(entry, str) else {k: v for k, v in (entry.get("options") or {}).items()}
                options.update({k: value[k] for k in value} if key in ("neb", "trained_curve") else {key: value})
                finders[i] = {"name": name, "options": options}
        node["finders"] = finders

    def settings_of(self, entry: str | Mapping[str, Any]) -> DSSConfig:
        """The settings one entry of ``finders`` runs with: ``dss`` with that finder and its options."""
        if isinstance(entry, str):
            return replace(self.dss, finder=FinderChoice(entry))
        return replace(self.dss, finder=FinderChoice(str(entry["name"]), dict(entry.get("options") or {})))

    def finder_settings(self) -> dict[str, DSSConfig]:
        """The settings of every finder of ``finders``, by name, in order."""
        return {_finder_name(entry): self.settings_of(entry) for entry in self.finders}


def _finder_name(entry: str | Mapping[str, Any]) -> str:
    if isinstance(entry, str):
        return entry
    if not isinstance(entry, Mapping) or "name" not in entry or set(entry) - {"name", "options"}:
        raise ValueError(f"an entry of finders is a path finder's name or {{name, options}}, got {entry!r}")
    return str(entry["name"])


def trained_points(string: BeadString) -> tuple[int, str]:
    """What a finder trains, endpoints included: ``(count, kind)`` (DSS beads, NEB images, curve control points)."""
    kind = _POINT_KINDS.get(string.method, "beads")
    if string.method in ("bezier", "polychain"):
        saved = string.config.get("finder", {}).get("options") or string.config.get("trained_curve", {})  # or older
        bends = int(saved.get("bends", string.num_beads - 2))
        return (bends + 2 if string.num_beads > 2 else 2), "control points"
    return string.num_beads, kind


def _pair_endpoints(cfg: ComparePathsConfig, space: ParamSpace, run: Run, pair: int) -> dict[str, Any]:
    """The pair's endpoints (B aligned), trained once and kept in ``endpoints/`` for a resumed run."""
    path = run.subdir("endpoints") / f"pair{pair:03d}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    seeds = [cfg.seed + 2 * pair, cfg.seed + 2 * pair + 1]
    trained = train_endpoints(space, seeds, cfg.threshold, max_steps=cfg.train_steps or None)
    a, b = trained.thetas[0], trained.thetas[1]
    reached = bool(trained.reached.all())
    aligned = align(space, a, b, cfg.align) if reached else b
    state = {
        "seeds": seeds, "a": a.cpu(), "b": aligned.cpu(), "losses": trained.losses.tolist(), "reached": reached,
        "distance": float((b.double() - a.double()).norm()),
        "aligned_distance": float((aligned.double() - a.double()).norm()),
    }  # fmt: skip
    atomic_torch_save(state, path)
    return state


def _unit(cfg: ComparePathsConfig, space: ParamSpace, run: Run, pair: int, finder: str) -> dict[str, Any]:
    """Connect one pair with one finder; save its string; return its record."""
    ends = _pair_endpoints(cfg, space, run, pair)
    record: dict[str, Any] = {
        "kind": "path", "pair": pair, "finder": finder, "seeds": ends["seeds"], "align": cfg.align,
        "endpoint_losses": ends["losses"], "distance": ends["distance"], "aligned_distance": ends["aligned_distance"],
    }  # fmt: skip
    if not ends["reached"]:
        steps = cfg.train_steps or 5 * space.task.recipe.steps
        return {**record, "connected": False, "reason": f"endpoints: not trained below L0 within {steps} steps"}
    evaluations, gradients, started = space.evaluations, space.gradients, time.perf_counter()
    a, b = space.check(ends["a"]), space.check(ends["b"])
    string = connect(space, a, b, cfg.threshold, cfg.finder_settings()[finder])
    seconds = time.perf_counter() - started
    path = run.subdir("strings") / f"pair{pair:03d}-{finder}.pt"
    string.save(path)
    log_string(run, string, prefix=f"geodesic/compare/pair{pair:03d}/{finder}")
    points, kind = trained_points(string)
    return {
        **record, **string.metrics(), "failure": string.failure,
        "barrier": string.max_loss_upper - string.endpoint_loss, "points": points, "point_kind": kind,
        "vertices": string.num_beads, "evaluations": space.evaluations - evaluations,
        "gradients": space.gradients - gradients, "seconds": seconds, "string": str(path.relative_to(run.path)),
    }  # fmt: skip


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def summarize(records: list[dict[str, Any]], finders: list[str]) -> list[dict[str, Any]]:
    """One row per finder: pairs, connected, and means over the pairs it ran on (lengths over connected pairs)."""
    rows = []
    for finder in finders:
        ran = [r for r in records if r["finder"] == finder and "barrier" in r]
        connected = [r for r in ran if r["connected"]]
        rows.append({
            "finder": finder, "pairs": len([r for r in records if r["finder"] == finder]), "ran": len(ran),
            "connected": len(connected), "barrier_mean": _mean([r["barrier"] for r in ran]),
            "normalized_length_mean": _mean([r["normalized_length"] for r in connected]),
            "points_mean": _mean([float(r["points"]) for r in ran]),
            "vertices_mean": _mean([float(r["vertices"]) for r in ran]),
            "evaluations_mean": _mean([float(r["evaluations"]) for r in ran]),
            "gradients_mean": _mean([float(r["gradients"]) for r in ran]),
            "seconds_mean": _mean([r["seconds"] for r in ran]),
        })  # fmt: skip
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "–" if isinstance(value, float) and not math.isfinite(value) else format(value, spec)


def _report(cfg: ComparePathsConfig, rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> str:
    budget = (
        f"{cfg.dss.max_evaluations or 'unlimited'} loss evaluations and "
        f"{f'{cfg.dss.max_seconds:g} s' if cfg.dss.max_seconds else 'unlimited time'}"
    )
    lines = [
        f"# geodesics compare-paths: {cfg.task.name}, L0 = {cfg.threshold:g}\n",
        f"{cfg.pairs} pair(s), alignment `{cfg.align}`, budget per finder and pair: {budget}. Barrier: certified "
        "maximum loss along the path above the higher endpoint. Points: what the finder trains, endpoints included "
        "(DSS beads, NEB images, curve control points); vertices: the polyline it is certified on. Connected: out of "
        "the pairs the finder ran on; means over those pairs (length: over the connected ones).\n",
        "| finder | connected | barrier | normalized length | points | vertices | evaluations | gradients | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['finder']} | {r['connected']}/{r['ran']} | {_fmt(r['barrier_mean'], '.4g')} | "
            f"{_fmt(r['normalized_length_mean'], '.4f')} | {_fmt(r['points_mean'], '.1f')} | "
            f"{_fmt(r['vertices_mean'], '.1f')} | {_fmt(r['evaluations_mean'], '.0f')} | "
            f"{_fmt(r['gradients_mean'], '.0f')} | {_fmt(r['seconds_mean'], '.1f')} |"
        )
    untrained = sorted({r["pair"] for r in records if "barrier" not in r})
    if untrained:
        lines.append(
            f"\nPairs {', '.join(map(str, untrained))}: an endpoint did not train below L0 within the step budget "
            "(`train_steps`), so no finder ran on them; they are left out of the means."
        )
    timed_out = [r for r in records if str(r.get("reason") or "").startswith("time:")]
    if timed_out:
        lines.append(
            f"\n{len(timed_out)} of {len(records)} runs were cut short by the wall-clock limit "
            f"(`dss.max_seconds={cfg.dss.max_seconds:g}`): their results depend on the machine's load. Budget by "
            "evaluations (`dss.max_evaluations`, `max_seconds=0`) for results that do not."
        )
    lines += [
        "\n## Pairs\n",
        "| pair | finder | connected | barrier | normalized length | points | evaluations | seconds | reason |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        if "barrier" not in r:
            lines.append(f"| {r['pair']} | {r['finder']} | no | – | – | – | – | – | {r['reason']} |")
            continue
        lines.append(
            f"| {r['pair']} | {r['finder']} | {'yes' if r['connected'] else 'no'} | {r['barrier']:.4g} | "
            f"{r['normalized_length']:.4f} | {r['points']} {r['point_kind']} | {r['evaluations']} | "
            f"{r['seconds']:.1f} | {r['reason'] or '–'} |"
        )
    for pair in sorted({r["pair"] for r in records if "barrier" in r}):
        lines.append(f"\n![pair {pair}](plots/pair{pair:03d}.png)")
    return "\n".join(lines) + "\n"


def run_compare_paths(cfg: ComparePathsConfig, on_unit: Any = None) -> list[dict[str, Any]]:
    """Run (or continue) the comparison; returns the per-finder rows.

    Args:
        cfg: the configuration.
        on_unit: optional callback after each finished (pair, finder) unit (tests use it to simulate a kill).
    """
    space = command_space(cfg)
    task = space.task
    run = Run.create(f"{cfg.name}-{task.name}", cfg, cfg.out, shared=True)
    main = distributed.is_main()
    run.announce(tensorboard=False)
    with run:
        done = {(r["pair"], r["finder"]) for r in run.agreed_records("path")}
        names = list(cfg.finder_settings())
        units = [(p, f) for p in range(cfg.pairs) for f in names]
        todo = [u for u in units if u not in done]
        pairs = distributed.shard(sorted({p for p, _ in todo}))
        with tqdm(total=len(units), initial=len(units) - len(todo), desc="compare-paths", unit="path",
                  disable=not main) as bar:  # fmt: skip
            for pair, finder in todo:
                if pair not in pairs:
                    continue
                run.append_record(_unit(cfg, space, run, pair, finder))
                bar.update(1)
                if on_unit is not None:
                    on_unit(pair, finder)
        for record in run.collect():  # computed by the other ranks: rank 0 alone writes TensorBoard
            if "string" in record:
                string = BeadString.load(run.path / record["string"])
                log_string(run, string, prefix=f"geodesic/compare/pair{record['pair']:03d}/{record['finder']}")
        order = {f: i for i, f in enumerate(names)}
        records = sorted(run.records("path"), key=lambda r: (r["pair"], order[r["finder"]]))
        rows = summarize(records, names)
        if not main:
            return rows
        for pair in sorted({r["pair"] for r in records if "string" in r}):
            strings = {r["finder"]: BeadString.load(run.path / r["string"]) for r in records
                       if r["pair"] == pair and "string" in r}  # fmt: skip
            plot_paths_loss(space, strings, run.subdir("plots") / f"pair{pair:03d}.png",
                            title=f"{task.name}, L0 = {cfg.threshold:g}, pair {pair}, align {cfg.align}")  # fmt: skip
        run.write_text("paths.csv", csv_text([_flat(r) for r in records]))
        run.write_text("results.csv", csv_text(rows))
        run.write_text("report.md", _report(cfg, rows, records))
    print(run.path.joinpath("report.md").read_text())
    return rows


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    keys = ["pair", "finder", "seeds", "align", "endpoint_losses", "connected", "reason", "barrier",
            "normalized_length", "points", "point_kind", "vertices", "evaluations", "gradients", "seconds",
            "max_loss_upper", "linear_barrier", "distance", "aligned_distance", "string"]  # fmt: skip
    return {k: record.get(k, "") for k in keys}
