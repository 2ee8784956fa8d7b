"""Configuration of ``metaopt compare`` (the files under ``configs/compare/``)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

from envs.errors import InvalidValue
from envs.tooling.config import RunOptions, TaskConfig, check_range

__all__ = [
    "DEFAULT_LR_GRID", "DEFAULT_OPTIMIZERS", "TUNED_SUFFIX", "CompareConfig", "CompareTaskConfig", "learned_label",
    "split_learned",
]  # fmt: skip

DEFAULT_LR_GRID = [round(10 ** (-4 + k / 2), 12) for k in range(9)]
"""1e-4 to 1 in half decades: 1e-4, 3.16e-4, 1e-3, ..., 0.316, 1."""
DEFAULT_OPTIMIZERS = ["sgd", "momentum", "nesterov", "rmsprop", "adam"]
"""The baselines of the L2L and DSS papers, by their names in :mod:`envs.training.optim`."""

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def learned_label(checkpoint: str) -> str:
    """The optimizer label of a ``learned`` checkpoint: a pretrained name as it is, a file path made file-safe."""
    if _LABEL.match(checkpoint):
        return checkpoint
    return "learned-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", checkpoint).strip("_.-")


def _option_value(text: str) -> Any:
    """A load-time option's value as written: true/false, a Python number or list, otherwise the word itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_learned(entry: str) -> tuple[str, dict[str, Any]]:
    """``(checkpoint, options)`` of a ``learned`` entry, the checkpoint's load-time rule options after a colon.

    ``family-v3`` or a file alone, or either followed by options: ``family-v3:weight_decay=0.6,adapt_rate=0.03``
    (split at the last ``:`` when what follows holds an ``=``).
    """
    checkpoint, sep, tail = entry.rpartition(":")
    if not sep or "=" not in tail:
        return entry, {}
    options: dict[str, Any] = {}
    for item in tail.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(
                f"learned: {entry!r} has option {item!r}; write key=value, e.g. {checkpoint}:weight_decay=0.6"
            )
        options[key.strip()] = _option_value(value.strip())
    return checkpoint, options


TUNE_ON = ("train", "eval")
"""What tuning minimises: the final training loss or the evaluation loss (``CompareConfig.tune_on``)."""

TUNED_SUFFIX = "-tuned"
"""Label suffix of a learned checkpoint's second arm, whose step multiplier is tuned on ``learned_lr_grid``."""


@dataclass
class CompareTaskConfig(TaskConfig):
    """One benchmark task of a comparison: a task with options, a horizon, and whether it is held out."""

    steps: int = 100
    """Training steps of every run (the horizon)."""
    held_out: bool = False
    """True for a variant kept out of meta-training (longer horizon, other width, depth, activation or data)."""
    targets: list[float] = field(default_factory=list)
    """Training losses for steps-to-reach and speed-up; empty: the reference optimizer's mean final loss."""

    def __post_init__(self) -> None:
        check_range(self, "steps", low=1, integer=True)
        if self.targets:  # empty: the reference optimizer's mean final loss
            check_range(self, "targets", low=0, low_open=True)


@dataclass
class CompareConfig(RunOptions):
    """Configuration of ``metaopt compare``: tuned baselines on paired seeds, reported per task."""

    tasks: dict[str, CompareTaskConfig] = field(default_factory=dict)
    """Tasks by label (the label names report rows, TensorBoard tags and plots): {label: {name, options, steps,
    held_out, targets}}, e.g. {relu: {name: digits_mlp, options: {activation: relu}, held_out: true}}."""
    name: str = "compare"
    """Prefix of the run directory name."""
    optimizers: list[str] = field(default_factory=lambda: list(DEFAULT_OPTIMIZERS))
    """Registered optimizer names (envs.training.optim: sgd, momentum, nesterov, rmsprop, adam, adamw, ...)."""
    optimizer_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Constructor options by optimizer name, replacing the registered ones, e.g. {learned: {checkpoint: best.pt}}."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Other names for registered optimizers, so one can appear several times with different optimizer_options,
    e.g. {learned_loss: learned, learned_geodesic: learned}."""
    learned: list[str] = field(default_factory=list)
    """Learned-rule checkpoints compared as arms of their own, by pretrained name or file, e.g. [family-mlp-v0];
    each becomes an optimizer labelled by the checkpoint (an alias of ``learned`` with that checkpoint). Load-time
    options of the rule follow a colon, ``checkpoint:key=value,key=value`` (quote an entry with commas)."""
    imports: list[str] = field(default_factory=list)
    """Python modules imported first, so that the tasks or optimizers they register can be named here."""
    reference: str = "adam"
    """Optimizer that speed-ups and paired differences are measured against (one of optimizers)."""
    lr_grid: list[float] = field(default_factory=lambda: list(DEFAULT_LR_GRID))
    """Learning rates tried for every optimizer that has one (default 1e-4 to 1 in half decades)."""
    learned_lr_grid: list[float] = field(default_factory=list)
    """Step multipliers (the learned optimizer's ``lr``, 1 = the rule as trained) for a second arm of every
    ``learned`` checkpoint, labelled ``<label>-tuned``, whose multiplier is tuned per task like a baseline's learning
    rate (same tuning seeds, same choice) and evaluated on the same seeds; the untuned arm stays. Empty: no such arm."""
    tuning_seeds: int = 5
    """Tuning runs per learning rate; seeds tuning_seed_offset, ..., tuning_seed_offset + tuning_seeds - 1."""
    tune_on: str = "train"
    """What a learning rate is chosen by: ``train``, the lowest mean final training loss over the tuning seeds, or
    ``eval``, the lowest mean evaluation-set loss of their final weights (a baseline tuned for generalisation; the
    choice sees the evaluation set, on other seeds than the evaluation runs, so it favours the baseline)."""
    tuning_seed_offset: int = 0
    """First tuning seed."""
    eval_seeds: int = 20
    """Evaluation runs at the chosen learning rate, paired across optimizers (same weights and batches per seed)."""
    eval_seed_offset: int = 1000
    """First evaluation seed; the evaluation seeds must not overlap the tuning seeds."""
    final_window: int = 10
    """Final loss of a run = mean training loss over its last final_window steps (tuning and report)."""
    batched: bool = True
    """Advance all runs of a chunk together with torch.func.vmap where the optimizer has a functional twin; false:
    every run in a plain loop (the reference path)."""
    max_stacked_runs: int = 1024
    """Most runs advanced together; a bigger chunk is split in a fixed order, so results stay deterministic."""
    timing: bool = True
    """Time one plain-loop run per optimizer and task for the wall time per step and the speed-up in wall time; false
    leaves timings out, so the report depends on nothing but the seeds. Changing it does not refuse a resume: a
    finished run resumed with ``timing=true`` runs only the timing jobs."""
    threads: int = 1
    """CPU threads for torch while the command runs (0: torch's default). Small runs are fastest on one thread, and
    several OpenMP threads spin-wait badly on a busy shared CPU (docs/results.md, intra-op threads)."""

    def __post_init__(self) -> None:
        self._expand_learned()
        for label in self.tasks:
            if not _LABEL.match(label):
                raise ValueError(f"task label {label!r} must be letters, digits, '_', '.' or '-' (it names files)")
        if not self.optimizers:
            raise ValueError("optimizers is empty; name at least one, e.g. optimizers=[sgd,adam]")
        if len(set(self.optimizers)) != len(self.optimizers):
            raise ValueError(f"optimizers lists a name twice: {self.optimizers}")
        check_range(self, "lr_grid", low=0, low_open=True)
        if self.learned_lr_grid:  # empty: no tuned learned arms
            check_range(self, "learned_lr_grid", low=0, low_open=True)
        for key in ("tuning_seeds", "eval_seeds", "final_window", "max_stacked_runs"):
            check_range(self, key, low=1, integer=True)
        for key in ("tuning_seed_offset", "eval_seed_offset", "threads"):
            check_range(self, key, low=0, integer=True)
        if self.tune_on not in TUNE_ON:
            raise InvalidValue(CompareConfig, "tune_on", self.tune_on,
                               f"must be one of {', '.join(TUNE_ON)}, got {self.tune_on!r}")  # fmt: skip
        tuning = range(self.tuning_seed_offset, self.tuning_seed_offset + self.tuning_seeds)
        evaluation = range(self.eval_seed_offset, self.eval_seed_offset + self.eval_seeds)
        if set(tuning) & set(evaluation):
            raise ValueError(
                f"evaluation seeds {evaluation.start}..{evaluation.stop - 1} overlap tuning seeds "
                f"{tuning.start}..{tuning.stop - 1}; move eval_seed_offset"
            )
        for label, task in self.tasks.items():
            if self.final_window > task.steps:
                raise ValueError(f"final_window={self.final_window} exceeds the {task.steps} steps of task {label!r}")

    def _expand_learned(self) -> None:
        """Each ``learned`` checkpoint as an optimizer, alias and options entry (idempotent: a saved config reloads).

        With ``learned_lr_grid`` set, each is followed by its ``-tuned`` twin (same alias and options).
        """
        for entry in self.learned:
            checkpoint, rule_options = split_learned(entry)
            label = learned_label(entry)
            options: dict[str, Any] = {"checkpoint": checkpoint}
            if rule_options:
                options["options"] = rule_options
            for arm in [label, label + TUNED_SUFFIX] if self.learned_lr_grid else [label]:
                if arm in self.optimizers:
                    if self.aliases.get(arm) == "learned" and self.optimizer_options.get(arm) == options:
                        continue  # expanded before (a resolved config read back)
                    raise ValueError(f"learned: {entry!r} is labelled {arm!r}, already among optimizers")
                self.optimizers.append(arm)
                self.aliases[arm] = "learned"
                self.optimizer_options[arm] = dict(options)

    @property
    def tuned_learned(self) -> list[str]:
        """Labels of the learned arms whose step multiplier is tuned on ``learned_lr_grid`` (empty grid: none)."""
        if not self.learned_lr_grid:
            return []
        return [learned_label(checkpoint) + TUNED_SUFFIX for checkpoint in self.learned]

    def grid_of(self, optimizer: str) -> list[float]:
        """The grid ``optimizer`` is tuned on: ``learned_lr_grid`` for a tuned learned arm, else ``lr_grid``."""
        return self.learned_lr_grid if optimizer in self.tuned_learned else self.lr_grid

    @property
    def tuning_seed_list(self) -> list[int]:
        """The tuning seeds."""
        return list(range(self.tuning_seed_offset, self.tuning_seed_offset + self.tuning_seeds))

    @property
    def eval_seed_list(self) -> list[int]:
        """The evaluation seeds."""
        return list(range(self.eval_seed_offset, self.eval_seed_offset + self.eval_seeds))
