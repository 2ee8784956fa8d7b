"""The comparison harness: tune, evaluate on paired seeds, record every run, resume after a kill.

The work is a list of *units*, one run each: ``(phase, task, optimizer, lr, seed)`` with phase ``tune`` (every grid
learning rate on every tuning seed) or ``eval`` (every evaluation seed at the chosen learning rate). A finished unit is
one line of ``records.jsonl``.

Units are computed in *chunks* whose composition depends on the config alone: all tuning units of one (task,
optimizer), then all its evaluation units, each split in a fixed order into at most ``max_stacked_runs`` (a plain-loop
optimizer has one unit per chunk). Vectorized kernels may round differently with the number of stacked runs, so a
chunk with any unit missing is recomputed whole and only its missing records are written: a killed command, rerun
with the same ``out=``, ends with exactly the records, and so the report, of an uninterrupted run.

The work runs in two phases, each a list of chunks shared out round-robin over the ranks of a ``torchrun`` launch
(:func:`envs.tooling.distributed.shard`; alone, one rank does all): every tuning chunk of every (task, optimizer),
then, once every rank has finished and the learning rates are chosen from the records, every evaluation chunk and
the step timings. Which rank computes a chunk changes none of its numbers.
"""

from __future__ import annotations

import importlib
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from envs.errors import ConfigError
from envs.task import Task
from envs.task.registry import make_task
from envs.tooling import distributed
from envs.tooling.runs import Run
from envs.training.functional import FunctionalOptimizer, functional_from_spec
from envs.training.optim import get_optimizer_spec, make_optimizer
from metaopt.compare.config import CompareConfig
from metaopt.compare.results import Records, TaskResult, UnitKey, task_results, tuning_of
from metaopt.compare.runner import RunResult, RunSpec, run_batched, run_plain

__all__ = ["Contender", "Plan", "Unit", "compute_results", "make_plan", "sweep"]


@dataclass(frozen=True)
class Unit:
    """One run of the comparison."""

    phase: str
    """``tune`` or ``eval``."""
    task: str
    """Task label."""
    optimizer: str
    """Optimizer name."""
    lr: float | None
    """Learning rate (None: the optimizer's own, for one that is not tuned)."""
    seed: int
    """Run seed."""

    @property
    def key(self) -> UnitKey:
        """The key its record is found by."""
        return (self.phase, self.task, self.optimizer, self.lr, self.seed)

    def record(self, result: RunResult, steps: int, path: str) -> dict[str, Any]:
        """The line of ``records.jsonl`` for this unit."""
        return {
            "kind": "unit",
            "phase": self.phase,
            "task": self.task,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "seed": self.seed,
            "steps": steps,
            "path": path,
            "losses": result.losses,
            "diverged": result.diverged,
            "eval_loss": result.eval_loss,
        }


@dataclass(frozen=True)
class Contender:
    """An optimizer in the comparison."""

    name: str
    """Name in the comparison (a registry name, or an alias of one)."""
    options: dict[str, Any]
    """Constructor options from the config (replacing the registered ones)."""
    functional: FunctionalOptimizer | None
    """Its functional twin, or None (then every run is a plain loop)."""
    tunable: bool
    """Whether its learning rate is tuned on the grid."""
    registry: str = ""
    """The registry name it is built from (``name`` unless the config gives an alias)."""
    grid: tuple[float, ...] = ()
    """The values its learning rate is tuned on (``lr_grid``, or ``learned_lr_grid`` for the step multiplier of a
    tuned learned arm); empty when it is not tuned."""


@dataclass(frozen=True)
class Plan:
    """A validated comparison: the config, its tasks built, its optimizers resolved."""

    cfg: CompareConfig
    tasks: dict[str, Task]
    contenders: list[Contender]

    def path(self, contender: Contender) -> str:
        """``batched`` or ``plain``: how this optimizer's runs are computed."""
        return "batched" if self.cfg.batched and contender.functional is not None else "plain"

    @property
    def paths(self) -> dict[str, str]:
        """:meth:`path` by optimizer name."""
        return {c.name: self.path(c) for c in self.contenders}

    @property
    def tunable(self) -> dict[str, bool]:
        """Whether each optimizer's learning rate is tuned, by name."""
        return {c.name: c.tunable for c in self.contenders}

    @property
    def total_units(self) -> int:
        """Units of the whole comparison (evaluation counted even where tuning may find nothing stable)."""
        cfg = self.cfg
        tuning = cfg.tuning_seeds * sum(len(c.grid) for c in self.contenders if c.tunable)
        return len(self.tasks) * (tuning + cfg.eval_seeds * len(self.contenders))


def make_plan(cfg: CompareConfig) -> Plan:
    """Check everything a comparison needs before any work or any file: modules, tasks and their data, optimizers.

    Every optimizer is built once, on a throw-away parameter, with its options: a learned optimizer's checkpoint
    that is missing or broken, or an option the optimizer does not take, stops the comparison here.

    Raises:
        ConfigError: no tasks, an import that fails, options for an optimizer not compared, a reference not compared,
            an optimizer that cannot be built with its options (a broken checkpoint, an unknown option).
        TaskError: an unknown task or task option. ``ValueError``: an unknown optimizer.
        DataNotFoundError: a task's data files are missing.
    """
    for module in cfg.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"imports: cannot import {module!r} ({exc}); is it installed or on PYTHONPATH?") from None
    if not cfg.tasks:
        raise ConfigError("the config names no tasks; add some under tasks: (see configs/compare/quadratic.yaml)")
    stray = sorted(set(cfg.optimizer_options) - set(cfg.optimizers))
    if stray:
        raise ConfigError(f"optimizer_options names {', '.join(stray)}, not among optimizers {cfg.optimizers}")
    stray = sorted(set(cfg.aliases) - set(cfg.optimizers))
    if stray:
        raise ConfigError(f"aliases names {', '.join(stray)}, not among optimizers {cfg.optimizers}")
    contenders = []
    horizon = min(task.steps for task in cfg.tasks.values())  # the shortest run a schedule must fit
    for name in cfg.optimizers:
        registered = cfg.aliases.get(name, name)
        spec = get_optimizer_spec(registered)
        options = dict(cfg.optimizer_options.get(name, {}))
        tunable = spec.tunable_lr or name in cfg.tuned_learned  # a tuned learned arm: its step multiplier
        grid = tuple(float(lr) for lr in cfg.grid_of(name)) if tunable else ()
        _check_builds(name, registered, options, grid[0] if tunable else None, horizon)
        twin = functional_from_spec(spec, options)
        contenders.append(Contender(name, options, twin, tunable, registered, grid))
    if cfg.reference not in cfg.optimizers:
        raise ConfigError(f"reference={cfg.reference!r} is not among optimizers {cfg.optimizers}; add it or change it")
    tasks: dict[str, Task] = {}
    for label, task_cfg in cfg.tasks.items():
        task = make_task(task_cfg.name, device=cfg.device, dtype=cfg.dtype, **task_cfg.options)
        seed = cfg.tuning_seed_offset
        next(task.instance(seed).batches(seed))  # loads the data now: missing files fail before anything is written
        tasks[label] = task
    return Plan(cfg, tasks, contenders)


def _check_builds(name: str, registered: str, options: dict[str, Any], lr: float | None, horizon: int) -> None:
    """Build optimizer ``name`` once on a throw-away parameter, with the shortest task's ``horizon``.

    A clear :class:`ConfigError` if it cannot be built (a warmup as long as a run included).
    """
    probe = [torch.zeros(1, requires_grad=True)]
    try:
        make_optimizer(registered, probe, lr=lr, **get_optimizer_spec(registered).with_horizon(options, horizon))
    except (TypeError, ValueError) as exc:  # CheckpointError is a ValueError
        raise ConfigError(f"optimizer {name!r} cannot be built with its optimizer_options: {exc}") from None


def sweep(plan: Plan, run: Run, *, progress: bool = True) -> Records:
    """Compute every unit of ``plan`` that ``run`` has not finished yet (this rank's share), writing records by chunk.

    Returns:
        All records of the run (every rank's), indexed.
    """
    cfg = plan.cfg
    records = Records(run.agreed_records())
    disable = not progress or not distributed.is_main()
    with tqdm(total=plan.total_units, desc="compare", unit="run", disable=disable, dynamic_ncols=True) as bar:
        bar.update(len(records.units))
        tuning = [
            _Job(label, contender, chunk)
            for label in plan.tasks
            for contender in plan.contenders
            if contender.tunable
            for chunk in _chunks(plan, contender, [
                Unit("tune", label, contender.name, lr, seed)
                for lr in contender.grid
                for seed in cfg.tuning_seed_list
            ])
        ]  # fmt: skip
        _run_jobs(plan, run, records, [job for job in tuning if job.missing(records)], bar)
        records = _exchange(run, records, bar)
        evaluation: list[_Job] = []
        for label in plan.tasks:
            for contender in plan.contenders:
                lr: float | None = None
                if contender.tunable:
                    lr = tuning_of(records, cfg, label, contender.name).chosen
                    if lr is None:  # every learning rate diverged: nothing to evaluate, the report says so
                        continue
                units = [Unit("eval", label, contender.name, lr, seed) for seed in cfg.eval_seed_list]
                evaluation += [_Job(label, contender, chunk) for chunk in _chunks(plan, contender, units)]
                if cfg.timing:
                    evaluation.append(_Job(label, contender, [], lr))
        _run_jobs(plan, run, records, [job for job in evaluation if job.missing(records)], bar)
        records = _exchange(run, records, bar)
    return records


@dataclass(frozen=True)
class _Job:
    """A chunk of units of one (task, optimizer), or (no units) the timing of its plain loop at ``lr``."""

    task: str
    contender: Contender
    chunk: list[Unit]
    lr: float | None = None

    def missing(self, records: Records) -> bool:
        if not self.chunk:
            return (self.task, self.contender.name) not in records.timings
        return any(u.key not in records.units for u in self.chunk)


def _chunks(plan: Plan, contender: Contender, units: list[Unit]) -> list[list[Unit]]:
    """``units`` split in order into the chunks computed together (fixed by the config)."""
    size = plan.cfg.max_stacked_runs if plan.path(contender) == "batched" else 1
    return [units[start : start + size] for start in range(0, len(units), size)]


def _run_jobs(plan: Plan, run: Run, records: Records, jobs: list[_Job], bar: tqdm) -> None:
    """This rank's share of ``jobs`` (each with something missing), records appended."""
    for job in distributed.shard(jobs):
        task, steps = plan.tasks[job.task], plan.cfg.tasks[job.task].steps
        bar.set_postfix_str(f"{job.task} {job.contender.name} {job.chunk[0].phase if job.chunk else 'timing'}")
        if not job.chunk:
            record = _time_steps(task, job.contender, job.task, job.lr, plan.cfg.eval_seed_list[0], steps)
            run.append_record(record)
            records.add(record)
            continue
        _compute_chunk(plan, run, records, task, job.contender, job.chunk, steps, bar)


def _exchange(run: Run, records: Records, bar: tqdm) -> Records:
    """Wait for every rank and read back all their records (alone: ``records`` as they are)."""
    if distributed.world_size() == 1:
        return records
    distributed.barrier()  # every rank's records are on disk
    records = Records(run.agreed_records())  # and read by every rank before any appends more
    bar.update(max(0, min(len(records.units), bar.total) - bar.n))
    return records


def compute_results(cfg: CompareConfig, *, progress: bool = True) -> tuple[Run, list[TaskResult]]:
    """Validate, open (or reopen) the run directory, compute the missing units, and read the results back."""
    plan = make_plan(cfg)  # every check before the run directory exists
    run = Run.create(cfg.name, cfg, cfg.out, shared=True)
    run.announce()
    threads = torch.get_num_threads()
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        sweep(plan, run, progress=progress)
    finally:
        torch.set_num_threads(threads)
    run.collect()  # the ranks' records folded into records.jsonl
    records = Records(run.records())  # the results depend on the file alone, as they do after a resume
    return run, [task_results(cfg, label, records, plan.paths, plan.tunable) for label in cfg.tasks]


def _compute_chunk(
    plan: Plan, run: Run, records: Records, task: Task, contender: Contender, chunk: list[Unit], steps: int, bar: tqdm
) -> None:
    """Compute one chunk whole (its composition fixes its numbers); append the records of its missing units."""
    path = plan.path(contender)
    missing = {u.key for u in chunk if u.key not in records.units}
    started = time.perf_counter()
    if path == "batched":
        assert contender.functional is not None
        results = run_batched(task, [RunSpec(u.seed, u.lr) for u in chunk], steps, contender.functional)
    else:
        results = [run_plain(task, RunSpec(u.seed, u.lr), steps, contender.registry, contender.options) for u in chunk]
    seconds = time.perf_counter() - started
    new = [u.record(r, steps, path) for u, r in zip(chunk, results) if u.key in missing]
    if path == "batched":
        u = chunk[0]
        new.append(
            {"kind": "chunk", "phase": u.phase, "task": u.task, "optimizer": u.optimizer, "path": path}
            | {"runs": len(chunk), "steps": steps, "seconds": seconds}
        )
    run.append_records(new)
    for record in new:
        records.add(record)
    bar.update(len(missing))


def _time_steps(
    task: Task, contender: Contender, label: str, lr: float | None, seed: int, steps: int
) -> dict[str, Any]:
    """Wall time per step of the plain loop (the drop-in cost of the optimizer): the median over one run's steps."""
    result = run_plain(task, RunSpec(seed, lr), steps, contender.registry, contender.options)
    seconds = statistics.median(result.step_seconds) if result.step_seconds else float("nan")
    return {
        "kind": "timing",
        "task": label,
        "optimizer": contender.name,
        "lr": lr,
        "seed": seed,
        "steps_timed": len(result.step_seconds),
        "seconds_per_step": seconds,
    }
