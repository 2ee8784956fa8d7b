"""From the records of a comparison to its results: one :class:`TaskResult` per task, one row per optimizer.

Everything the report, the CSV files, the plots and TensorBoard show is computed here from ``records.jsonl`` alone
(with the config), so a run resumed after a kill and an uninterrupted run give the same results. The statistics and
their conventions are those of :mod:`metaopt.compare.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from metaopt.compare.config import CompareConfig, CompareTaskConfig
from metaopt.compare.stats import (
    Interval,
    Paired,
    TargetResult,
    Tuning,
    choose_lr,
    equivalent_speedup,
    final_loss,
    interval,
    paired_difference,
    reach_target,
    t_interval,
    wall_clock_speedup,
)

__all__ = ["OptimizerResult", "Records", "TaskResult", "task_results", "tuning_of", "unit_key"]

UnitKey = tuple[str, str, str, float | None, int]
"""``(phase, task label, optimizer, lr, seed)``: what identifies a finished run."""


def unit_key(record: Mapping[str, Any]) -> UnitKey:
    """The key of a unit record."""
    lr = None if record["lr"] is None else float(record["lr"])
    return (record["phase"], record["task"], record["optimizer"], lr, int(record["seed"]))


def _float(value: Any) -> float:
    """A number from a record (non-finite numbers are stored as the strings "nan", "inf", "-inf")."""
    return float(value) if value is not None else math.nan


class Records:
    """The records of a run, indexed: finished units by key, plus timings and chunk times."""

    def __init__(self, records: Iterable[Mapping[str, Any]]):
        self.units: dict[UnitKey, Mapping[str, Any]] = {}
        self.timings: dict[tuple[str, str], float] = {}
        self.chunks: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
        for record in records:
            self.add(record)

    def add(self, record: Mapping[str, Any]) -> None:
        """Index one record (a later record of the same unit replaces an earlier one)."""
        kind = record.get("kind")
        if kind == "unit":
            self.units[unit_key(record)] = record
        elif kind == "timing":
            self.timings[(record["task"], record["optimizer"])] = _float(record["seconds_per_step"])
        elif kind == "chunk":
            self.chunks.setdefault((record["phase"], record["task"], record["optimizer"]), []).append(record)

    def run_curve(self, key: UnitKey) -> tuple[list[float], bool, float]:
        """``(training losses, diverged, final eval loss)`` of a finished unit."""
        record = self.units[key]
        return [_float(v) for v in record["losses"]], bool(record["diverged"]), _float(record["eval_loss"])


def tuning_of(records: Records, cfg: CompareConfig, label: str, optimizer: str) -> Tuning:
    """Learning-rate choice of ``optimizer`` on task ``label`` from its finished tuning units.

    On its grid (:meth:`CompareConfig.grid_of`): ``lr_grid``, or ``learned_lr_grid`` for a tuned learned arm; by
    the final training loss or, with ``tune_on: eval``, by the evaluation loss of each tuning run's final weights.
    """
    seeds, grid = cfg.tuning_seed_list, cfg.grid_of(optimizer)
    finals = np.empty((len(grid), len(seeds)))
    diverged = np.zeros_like(finals, dtype=bool)
    for i, lr in enumerate(grid):
        for j, seed in enumerate(seeds):
            losses, div, eval_loss = records.run_curve(("tune", label, optimizer, float(lr), seed))
            finals[i, j] = eval_loss if cfg.tune_on == "eval" else final_loss(losses, cfg.final_window)
            diverged[i, j] = div
    return choose_lr(grid, finals, diverged)


@dataclass(frozen=True)
class OptimizerResult:
    """Everything reported for one optimizer on one task."""

    optimizer: str
    """Registry name."""
    path: str
    """``batched`` (functional twin, vmap) or ``plain`` (one plain loop per run)."""
    tuning: Tuning | None
    """Learning-rate tuning; None for an optimizer whose learning rate is not tuned."""
    lr: float | None
    """Learning rate of the evaluation runs (None: not tuned, or no stable one on the grid)."""
    seeds: int
    """Evaluation runs made (0 when no learning rate was stable)."""
    diverged: int
    """Evaluation runs that diverged (left out of every mean below)."""
    curves: np.ndarray
    """``(N, T)`` training-loss curves of the non-diverged evaluation runs."""
    finals: np.ndarray
    """``(seeds,)`` final loss per evaluation seed, NaN where the run diverged."""
    final: Interval
    """Final training loss over the non-diverged evaluation seeds."""
    eval_loss: Interval
    """Evaluation-set loss of the final weights over the non-diverged evaluation seeds."""
    targets: tuple[TargetResult, ...]
    """Steps to reach each target and speed-up over the reference."""
    paired: Paired | None
    """Paired final-loss difference to the reference (None for the reference itself or without one)."""
    seconds_per_step: float | None
    """Median wall time of one step in a plain loop (one evaluation seed); None when not measured."""
    batched_seconds_per_run_step: float | None
    """Wall time of the batched evaluation chunk(s) / (runs x steps); None for the plain path or when not measured."""
    eval_by_seed: np.ndarray | None = None
    """``(seeds,)`` evaluation loss per evaluation seed, NaN where the run diverged."""
    paired_eval: Paired | None = None
    """Paired evaluation-loss difference to the reference (None for the reference itself or without one)."""
    speedup: float | None = None
    """Reference-equivalent speed-up (:func:`~metaopt.compare.stats.equivalent_speedup`); None without curves."""
    wall_speedup: float | None = None
    """``speedup`` in wall time (:func:`~metaopt.compare.stats.wall_clock_speedup`, from the plain loop's time per
    step of this optimizer and of the reference); None without timings."""

    @property
    def curve_interval(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean training-loss curve and its t-interval half-width per step, ``(T,)`` each."""
        return t_interval(self.curves)


@dataclass(frozen=True)
class TaskResult:
    """The comparison on one task."""

    label: str
    """The task's label in the config."""
    config: CompareTaskConfig
    """The task, its options, horizon and held-out flag."""
    targets: tuple[float, ...]
    """Targets of steps-to-reach (the config's, or the reference's mean final loss)."""
    targets_from_reference: bool
    """True when ``targets`` is the reference optimizer's mean final loss (none were configured)."""
    optimizers: tuple[OptimizerResult, ...]
    """One per optimizer, in config order."""


@dataclass(frozen=True)
class _Evaluation:
    """The evaluation runs of one optimizer on one task, before the comparison with the reference."""

    tuning: Tuning | None
    curves: np.ndarray
    finals: np.ndarray
    diverged: int
    eval_losses: np.ndarray
    eval_by_seed: np.ndarray
    """``(seeds,)`` evaluation loss per evaluation seed, NaN where the run diverged (for pairing)."""

    @property
    def mean_curve(self) -> np.ndarray:
        return self.curves.mean(axis=0) if self.curves.shape[0] else np.empty(0)


def _evaluation(cfg: CompareConfig, label: str, name: str, records: Records, tunable: bool) -> _Evaluation:
    tuning = tuning_of(records, cfg, label, name) if tunable else None
    steps = cfg.tasks[label].steps
    if tuning is not None and tuning.chosen is None:  # nothing stable on the grid: no evaluation runs
        return _Evaluation(tuning, np.empty((0, steps)), np.empty(0), 0, np.empty(0), np.empty(0))
    lr = tuning.chosen if tuning is not None else None
    curves, finals, eval_losses, by_seed, diverged = [], [], [], [], 0
    for seed in cfg.eval_seed_list:
        losses, div, eval_loss = records.run_curve(("eval", label, name, lr, seed))
        if div:
            diverged += 1
            finals.append(math.nan)
            by_seed.append(math.nan)
            continue
        curves.append(losses)
        finals.append(final_loss(losses, cfg.final_window))
        eval_losses.append(eval_loss)
        by_seed.append(eval_loss)
    curve_array = np.asarray(curves, dtype=np.float64).reshape(len(curves), steps)
    return _Evaluation(
        tuning, curve_array, np.asarray(finals), diverged, np.asarray(eval_losses), np.asarray(by_seed, dtype=float)
    )


def task_results(
    cfg: CompareConfig, label: str, records: Records, paths: Mapping[str, str], tunable: Mapping[str, bool]
) -> TaskResult:
    """Assemble the results of task ``label`` from the finished units.

    Args:
        cfg: the comparison's config.
        label: task label.
        records: the run's records.
        paths: ``batched`` or ``plain`` by optimizer name.
        tunable: whether each optimizer's learning rate is tuned.
    """
    task_cfg = cfg.tasks[label]
    evaluations = {name: _evaluation(cfg, label, name, records, tunable[name]) for name in cfg.optimizers}
    reference = evaluations.get(cfg.reference)
    targets: Sequence[float] = task_cfg.targets
    from_reference = False
    if not targets and reference is not None and reference.curves.shape[0]:
        targets, from_reference = [float(np.nanmean(reference.finals))], True
    rows = []
    reference_seconds = records.timings.get((label, cfg.reference)) if cfg.timing else None
    for name, ev in evaluations.items():
        chunks = records.chunks.get(("eval", label, name), [])
        seconds = records.timings.get((label, name)) if cfg.timing else None
        speedup = (
            equivalent_speedup(ev.curves, reference.mean_curve, task_cfg.steps, cfg.final_window)
            if reference is not None
            else None
        )
        run_steps = sum(int(c["runs"]) * int(c["steps"]) for c in chunks)
        batched_time = sum(_float(c["seconds"]) for c in chunks) / run_steps if run_steps else None
        compare_to_reference = reference is not None and name != cfg.reference and ev.finals.size > 0
        rows.append(
            OptimizerResult(
                optimizer=name,
                path=paths[name],
                tuning=ev.tuning,
                lr=ev.tuning.chosen if ev.tuning is not None else None,
                seeds=len(ev.finals),
                diverged=ev.diverged,
                curves=ev.curves,
                finals=ev.finals,
                final=interval(ev.finals[np.isfinite(ev.finals)]),
                eval_loss=interval(ev.eval_losses),
                targets=tuple(
                    reach_target(ev.curves, t, task_cfg.steps, reference.mean_curve if reference else None)
                    for t in targets
                ),
                paired=paired_difference(ev.finals, reference.finals) if compare_to_reference and reference else None,
                seconds_per_step=seconds,
                batched_seconds_per_run_step=batched_time if cfg.timing and paths[name] == "batched" else None,
                eval_by_seed=ev.eval_by_seed,
                paired_eval=(
                    paired_difference(ev.eval_by_seed, reference.eval_by_seed)
                    if compare_to_reference and reference
                    else None
                ),
                speedup=speedup,
                wall_speedup=wall_clock_speedup(speedup, seconds, reference_seconds),
            )
        )
    return TaskResult(label, task_cfg, tuple(targets), from_reference, tuple(rows))
