"""Configuration of meta-training (``metaopt train``, the files under ``configs/metaopt/``), and its seed ranges.

Seeds: episode e, slot i trains on run seed ``TRAIN_SEED_BASE + e * meta_batch + i``; validation uses
``VAL_SEED_BASE + k`` and tuning ``TUNE_SEED_BASE + k``; seeds below ``VAL_SEED_BASE`` are never touched, so they are
free for final evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from envs.errors import InvalidValue
from envs.task.registry import get_task_class, validate_options
from envs.tooling.config import RunOptions, TaskConfig, check_range
from envs.tooling.registry import Choice
from metaopt.compare.config import DEFAULT_LR_GRID
from metaopt.objectives import ObjectiveConfig, needs_held_out
from metaopt.outer import estimator_config
from metaopt.rules import rule_config

__all__ = [
    "RESUMABLE_KEYS",
    "output_scale_hint",
    "EstimatorChoice",
    "RuleChoice",
    "TASK_SAMPLING",
    "TRAIN_SEED_BASE",
    "TUNE_SEED_BASE",
    "VAL_SEED_BASE",
    "FamilyTaskConfig",
    "TrainConfig",
    "train_seed",
]

TASK_SAMPLING = ("cycle", "random")
"""How the slots of a meta-batch pick their task: in turn, or each one drawn uniformly (seeded by episode and slot)."""

VAL_SEED_BASE = 100_000
"""First validation seed."""
TUNE_SEED_BASE = 200_000
"""First seed used to tune the baselines' learning rates."""
TRAIN_SEED_BASE = 1_000_000
"""First meta-training seed."""

RESUMABLE_KEYS = frozenset({"episodes", "max_skips"})
"""Keys ``resume=`` may change: more episodes continue the same training (a finished run is extended; its weights
equal those of a run started with that many episodes, though it also validated at its old last episode, so its
best.pt may be that one), and max_skips only says when to give up."""


@dataclass
class RuleChoice(Choice):
    """A learned rule by name with its options."""

    registry: ClassVar[str] = "metaopt.rules.registry:RULES"


@dataclass
class EstimatorChoice(Choice):
    """A meta-gradient estimator by name with its options."""

    registry: ClassVar[str] = "metaopt.outer.registry:ESTIMATORS"


@contextmanager
def _options_of(key: str) -> Iterator[None]:
    """Name a bad value in the options of a rule or estimator by its full key (``estimator.options.sigma``)."""
    try:
        yield
    except InvalidValue as exc:
        raise InvalidValue(TrainConfig, f"{key}.{exc.key}", exc.value, exc.message) from None


def train_seed(episode: int, slot: int, meta_batch: int) -> int:
    """The run seed of optimizee ``slot`` in ``episode``."""
    return TRAIN_SEED_BASE + episode * meta_batch + slot


@dataclass
class FamilyTaskConfig(TaskConfig):
    """A member of the meta-training family: a task, its fixed options, and options drawn per optimizee."""

    choices: dict[str, list[Any]] = field(default_factory=dict)
    """Options drawn for each optimizee, each key's value uniformly from its list, e.g. ``{width: [10, 20, 40],
    depth: [1, 2, 3], activation: [sigmoid, tanh, relu]}`` (they override ``options``; validation uses
    ``options`` alone)."""


@dataclass
class TrainConfig(RunOptions):
    """Configuration of ``metaopt train`` (the files under ``configs/metaopt/``)."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "net": "rule.options", "rule_options": "rule.options", "estimator_options": "estimator.options",
        "objective.loss_weight": "objective.options.loss_weight",
    }  # fmt: skip
    """Keys of older configs and run directories, read at their new place."""

    tasks: list[FamilyTaskConfig] = field(default_factory=lambda: [FamilyTaskConfig()])
    """The task family: tasks with options (and per-optimizee ``choices``), assigned to the slots of each
    meta-batch by ``task_sampling``."""
    task_sampling: str = "cycle"
    """cycle: the tasks in turn across the slots (slot i trains tasks[i mod n]); random: each slot draws a task
    uniformly, seeded by (seed, episode, slot)."""
    start_offset: int = 0
    """Each fresh optimizee first takes a number of plain steps of the current rule (no meta-gradient) drawn
    uniformly from 0..start_offset, so the truncations of a meta-batch sit at different points of training (0:
    all start at step 0)."""
    horizons: list[int] = field(default_factory=list)
    """Random horizons: each episode draws its number of steps uniformly from this list (multiples of truncation,
    seeded by the episode), so the rule meets many points of training at many lengths; empty: every episode has
    steps. Validation always runs steps."""
    grad_scales: list[float] = field(default_factory=list)
    """Gradient rescaling: each optimizee's gradients are multiplied by a factor drawn from this list (its losses
    unchanged; seeded by episode and slot); empty: no rescaling."""
    param_scales: list[float] = field(default_factory=list)
    """Weight reparameterization: each linear or convolutional layer of each optimizee stores its weight times a
    factor drawn from this list and divides its input by it (the same function; seeded by episode and slot); empty:
    none."""
    name: str = "train"
    """Prefix of the run directory name."""
    rule: RuleChoice = field(default_factory=lambda: RuleChoice("lstm"))
    """The learned rule, ``{name, options}``: lstm (the coordinatewise LSTM), mlp, tiny, or one added with
    register_rule; options are the fields of its Config (``metaopt train --help rule.name=NAME`` lists them)."""
    estimator: EstimatorChoice = field(default_factory=lambda: EstimatorChoice("truncated_backprop"))
    """How meta-gradients are estimated, ``{name, options}``: truncated_backprop (through the higher unroll), es,
    pes, or one added with register_estimator; options are the fields of its Config."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """Meta-objective of each truncation."""
    steps: int = 100
    """K: optimizer steps per episode."""
    truncation: int = 20
    """T: steps per truncation (one meta-step each); must divide steps."""
    episodes: int = 200
    """Episodes to train; each has steps / truncation meta-steps."""
    meta_batch: int = 4
    """Optimizees per meta-step (their meta-losses are averaged)."""
    meta_lr: float = 1e-3
    """Learning rate of the meta-optimizer (Adam)."""
    clip_grad_norm: float = 1.0
    """Clip the meta-gradient to this global norm (0 disables clipping)."""
    meta_average: float = 0.0
    """Average the rule's weights over meta-steps (an exponential moving average with this decay per meta-step, its
    decay at meta-step t at most (1 + t) / (10 + t) so the start weighs little): validation, ``best.pt`` and the
    run's result use the average, the meta-optimizer goes on from the raw weights; 0 (the default) keeps no average."""
    second_order: bool = False
    """Backpropagate through the optimizee's gradients too (the paper drops these terms: false)."""
    max_skips: int = 10
    """Stop after this many consecutive meta-steps with a NaN or infinite meta-gradient."""
    val_every: int = 10
    """Validate every this many episodes (and after the last one)."""
    val_seeds: int = 10
    """Number of held-out validation seeds per task."""
    tune_seeds: int = 5
    """Number of seeds on which Adam's learning rate is tuned for validation."""
    lr_grid: list[float] = field(default_factory=lambda: list(DEFAULT_LR_GRID))
    """Adam learning rates tried for validation."""
    final_window: int = 10
    """Validation scores a run by its mean training loss over its last final_window steps (the harness's rule)."""
    seed: int = 0
    """Seed of the network's initial weights."""
    resume: str | None = None
    """Run directory of a killed or finished run to continue with its saved config. Given with other keys, only
    episodes (to extend the run) and max_skips may change; any other difference is refused, naming the keys."""
    targets: str | None = None
    """Run directory of ``metaopt targets``: train on its windows (one meta-step of T = truncation steps from a dataset
    state theta_t per window and episode) instead of on fresh episodes; the objective is then usually geodesic."""
    warm_start: bool = False
    """With targets: warm the rule's state up on the base optimizer's gradients before theta_t (else zero)."""
    on_policy_every: int = 0
    """With targets: every this many episodes, recompute the sampled windows' targets from the learned optimizer's own
    iterates (DSS from theta_t to where it got in T steps, inside the window's level set); 0 never."""

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("tasks is empty; name at least one task")
        self.tasks = [
            t if isinstance(t, FamilyTaskConfig) else FamilyTaskConfig(t.name, dict(t.options)) for t in self.tasks
        ]
        for key in ("steps", "truncation", "episodes", "meta_batch", "max_skips", "val_every"):
            check_range(self, key, low=1, integer=True)
        if self.steps % self.truncation:
            raise ValueError(f"truncation ({self.truncation}) must divide steps ({self.steps})")
        check_range(self, "meta_lr", low=0, low_open=True)
        check_range(self, "clip_grad_norm", low=0)
        check_range(self, "meta_average", low=0, high=1, high_open=True)
        check_range(self, "val_seeds", low=1, high=TUNE_SEED_BASE - VAL_SEED_BASE, integer=True)
        check_range(self, "tune_seeds", low=1, high=TRAIN_SEED_BASE - TUNE_SEED_BASE, integer=True)
        check_range(self, "lr_grid", low=0, low_open=True)
        check_range(self, "final_window", low=1, high=self.steps, integer=True)
        check_range(self, "seed", low=0, integer=True)
        check_range(self, "on_policy_every", low=0, integer=True)
        check_range(self, "start_offset", low=0, integer=True)
        if self.horizons:
            check_range(self, "horizons", low=self.truncation, integer=True)
            if any(h % self.truncation for h in self.horizons):
                raise InvalidValue(
                    TrainConfig, "horizons", self.horizons,
                    f"must be multiples of truncation ({self.truncation}), got {self.horizons}",
                )  # fmt: skip
            if self.targets:
                raise InvalidValue(TrainConfig, "horizons", self.horizons, "draws fresh episodes; drop targets=")
        if self.grad_scales:
            check_range(self, "grad_scales", low=0, low_open=True)
            if self.targets:
                raise InvalidValue(
                    TrainConfig, "grad_scales", self.grad_scales, "rescales fresh episodes; drop targets="
                )
        if self.param_scales:
            check_range(self, "param_scales", low=0, low_open=True)
            if self.targets:
                raise InvalidValue(
                    TrainConfig, "param_scales", self.param_scales, "reparameterizes fresh episodes; drop targets="
                )
        if needs_held_out(self.objective) and self.targets:
            raise InvalidValue(
                TrainConfig, "objective.name", self.objective.name,
                f"scores held-out batches, which only fresh episodes carry; drop targets= (now {self.targets})",
            )  # fmt: skip
        if self.task_sampling not in TASK_SAMPLING:
            raise InvalidValue(
                TrainConfig, "task_sampling", self.task_sampling,
                f"must be one of {', '.join(TASK_SAMPLING)}, got {self.task_sampling!r}",
            )  # fmt: skip
        for index, task in enumerate(self.tasks):
            for key, values in task.choices.items():
                if not values:
                    raise InvalidValue(TrainConfig, f"tasks.{index}.choices.{key}", values, "must be a non-empty list")
                for value in values:  # each drawn value must make a valid task (checked now, before any work)
                    try:
                        validate_options(get_task_class(task.name), {**task.options, key: value})
                    except ValueError as exc:
                        raise InvalidValue(
                            TrainConfig, f"tasks.{index}.choices.{key}", values, f"holds {value!r}: {exc}"
                        ) from None
        if (self.warm_start or self.on_policy_every) and not self.targets:
            raise ValueError("warm_start and on_policy_every need targets=<run directory of metaopt targets>")
        # validate the names and options, then spell every option out: the saved config.yaml records each value, and
        # a config that gives a default explicitly equals one that leaves it out (resume compares them)
        with _options_of("rule.options"):
            self.rule.options = _spelled_out(self.rule_config())
        with _options_of("estimator.options"):
            self.estimator.options = _spelled_out(self.estimator_config())

    def rule_config(self) -> Any:
        """The chosen rule's Config, from ``rule.options``."""
        return rule_config(self.rule.name, self.rule.options)

    def estimator_config(self) -> Any:
        """The chosen estimator's Config, from ``estimator.options``."""
        return estimator_config(self.estimator.name, self.estimator.options)


def _spelled_out(config: Any) -> dict[str, Any]:
    """Every field of an entry's Config instance, by name."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def output_scale_hint(cfg: TrainConfig) -> str:
    """What sets the size of the chosen rule's steps, for messages that suggest lowering it."""
    scale = getattr(cfg.rule_config(), "output_scale", None)
    if scale is None:
        return "the rule's step size"
    return f"rule.options.output_scale (now {scale:g})"
