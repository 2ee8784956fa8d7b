"""Checks of a meta-training config that need the registries, the tasks or the files: run before anything is written.

A :class:`~metaopt.training.TrainConfig` checks its own fields as it is built (ranges, names, the values of each
family member's ``choices``). What it cannot see from the fields alone is checked here, by ``metaopt train`` before
it creates the run directory, so a refused config leaves nothing behind (exit code 2, one message naming the key):

- the fixed ``options`` of every family member are options of its task;
- an objective that scores held-out batches has a held-out split in every family member (data tasks: ``valid_size``);
- an objective that imitates target points has a ``targets=`` dataset, and the dataset holds shards;
- an ES/PES population fits in memory: its noise (``pairs`` x rule parameters, float64) and its stacked optimizees.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from envs.errors import ConfigError, TaskError
from envs.task.registry import get_task_class, make_task, validate_options
from metaopt.objectives.registry import needs_held_out, needs_targets
from metaopt.rules.registry import make_rule
from metaopt.targets.dataset import TargetDataset, TargetsError
from metaopt.training.config import TrainConfig

__all__ = ["memory_limit_bytes", "preflight", "population_bytes"]

_MEMORY_SHARE = 0.5
"""A population may take at most this share of the machine's memory (the rest: optimizees, graphs, the system)."""


def preflight(cfg: TrainConfig) -> None:
    """Refuse ``cfg`` with a :class:`ConfigError` naming the key, before any run directory exists.

    Raises:
        ConfigError: an unknown task option, a held-out objective without a held-out split, an imitation objective
            without (or with an empty) ``targets=``, or an ES/PES population that cannot fit in memory.
    """
    for index, member in enumerate(cfg.tasks):
        try:
            validate_options(get_task_class(member.name), dict(member.options))
        except (TaskError, ValueError) as exc:
            raise ConfigError(f"bad value for tasks.{index}.options: {exc}") from None
    if needs_held_out(cfg.objective):
        for index, member in enumerate(cfg.tasks):
            task = make_task(member.name, device="cpu", **member.options)
            try:
                next(iter(task.valid_batches(0)))
            except TaskError as exc:
                raise ConfigError(
                    f"bad value for tasks.{index}.options.valid_size: objective.name={cfg.objective.name} scores "
                    f"held-out batches; {exc}"
                ) from None
    if needs_targets(cfg.objective) and not cfg.targets:
        raise ConfigError(
            f"bad value for targets: objective.name={cfg.objective.name} imitates target points, so it needs "
            "targets=<run directory of metaopt targets>"
        )
    if cfg.targets:
        try:
            TargetDataset(cfg.targets)
        except TargetsError as exc:
            raise ConfigError(f"bad value for targets: {exc}") from None
    _check_population(cfg)


def memory_limit_bytes() -> int:
    """The memory a population may take: a share of the machine's physical memory."""
    return int(_MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def population_bytes(pairs: int, rule_params: int, optimizee_params: int, vmap: bool) -> int:
    """A lower bound of the memory an antithetic population takes in one truncation.

    The noise is ``(pairs, rule_params)`` in float64, drawn whole; a vectorised population also stacks ``2 pairs``
    optimizees with their parameters, gradients and two moments of rule state (float32).
    """
    noise = 8 * pairs * rule_params
    stacked = 4 * 4 * 2 * pairs * optimizee_params if vmap else 0
    return noise + stacked


def _check_population(cfg: TrainConfig) -> None:
    options: Any = cfg.estimator_config()
    pairs = getattr(options, "pairs", None)
    if not isinstance(pairs, int) or not dataclasses.is_dataclass(options):
        return
    rule_params = sum(p.numel() for p in make_rule(cfg.rule.name, cfg.rule_config()).parameters())
    largest = max(_largest_optimizee(member) for member in cfg.tasks)
    population = getattr(options, "population", "loop")
    vmap = population != "loop"
    together = cfg.meta_batch if population == "stack" else 1  # at most the whole meta-batch in one call
    need, limit = population_bytes(pairs * together, rule_params, largest, vmap), memory_limit_bytes()
    if need > limit:
        per_pair = max(1, population_bytes(together, rule_params, largest, vmap))
        raise ConfigError(
            f"bad value for estimator.options.pairs: {pairs} antithetic pairs need at least {need / 2**30:.3g} GiB "
            f"({rule_params} rule parameters, optimizees of up to {largest} parameters), more than the "
            f"{limit / 2**30:.3g} GiB a population may take on this machine; at most {limit // per_pair} pairs fit"
        )


def _largest_optimizee(member: Any) -> int:
    """Parameters of the largest optimizee a family member can draw (every choice value tried on its own)."""
    variants = [dict(member.options)]
    for key, values in member.choices.items():
        variants += [{**member.options, key: value} for value in values]
    return max(make_task(member.name, device="cpu", **options).num_params for options in variants)
