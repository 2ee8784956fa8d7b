"""Endpoints of a path: fresh models trained until their evaluation loss is below a threshold, or loaded from files.

DSS connects points inside the level set {theta : F(theta) <= L0}, so its endpoints are models trained from a seed
until their first evaluation at or below L0 (they sit just inside the level set, as in the DSS paper's experiments).
:func:`train_endpoints` is the one trainer: it honours the optimizer and learning rate it is given (default the
task's recipe) and trains either

* each model alone, on its own batch stream ``task.batches(seed)``, with the plain loop :func:`envs.fit.fit` (what
  ``geodesics connect`` and :func:`train_to_threshold` do), or
* all models as one stack on one shared batch stream, with the optimizer's functional twin and per-model stopping
  (:func:`geodesics.beads.train_beads`; what sweeps do). An optimizer without a twin (a learned optimizer, say)
  trains each model alone instead.

:func:`make_endpoint` turns an :class:`EndpointConfig` (a seed, or a ``metaopt fit`` checkpoint or saved vector) into
a flat vector.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from envs.task import Task
from envs.tooling.config import check_range
from envs.training.fit import fit
from geodesics.beads import BeadSchedule, batched_optimizer, train_beads
from geodesics.space import ParamSpace

PROGRESS = logging.getLogger("geodesics.progress")
"""Progress of long engine work at INFO (endpoint training, DSS rounds); a command shows it by adding a handler."""

__all__ = [
    "EndpointConfig",
    "EndpointTraining",
    "ThresholdNotReached",
    "load_endpoint",
    "make_endpoint",
    "train_endpoints",
    "train_to_threshold",
]


class ThresholdNotReached(ValueError):
    """Training ran out of steps before the evaluation loss reached the threshold."""


@dataclass
class EndpointTraining:
    """Result of :func:`train_endpoints`: one row per seed."""

    thetas: Tensor
    """Trained flat vectors ``(M, P)``."""
    losses: Tensor
    """Evaluation loss of each model at its last check ``(M,)`` (float64)."""
    best_losses: Tensor
    """Lowest evaluation loss of each model over its checks ``(M,)``."""
    reached: Tensor
    """Which models reached the threshold without diverging ``(M,)`` (bool)."""
    steps: Tensor
    """Optimizer steps each model took ``(M,)``."""
    diverged: Tensor
    """Which models' training loss became NaN or infinite ``(M,)`` (bool)."""


def train_endpoints(
    space: ParamSpace,
    seeds: Sequence[int],
    threshold: float,
    *,
    max_steps: int | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    check_every: int = 10,
    shared_batches: int | None = None,
    finish: str = "none",
    finish_steps: int = 0,
) -> EndpointTraining:
    """Train ``task.init_model(s)`` for every seed until its evaluation loss is at most ``threshold``.

    Each model stops at its first check at or below the threshold (checks before the first step and every
    ``check_every`` steps).

    Args:
        space: the parameter space of the task.
        seeds: seed of each model's initial weights (and, trained alone, of its batch order).
        threshold: the evaluation loss to reach.
        max_steps: step budget per model (default five times the recipe's steps).
        optimizer: a registered optimizer (default the task recipe's).
        lr: learning rate (default the task recipe's).
        check_every: evaluate every this many steps.
        shared_batches: train the models as one stack on the batch stream of this seed; None trains each alone
            on its own stream. An optimizer without a functional twin always trains each model alone.
        finish: ``lbfgs``: a model still above the threshold after ``max_steps`` gets up to ``finish_steps`` L-BFGS
            iterations (:func:`geodesics.beads.lbfgs_finish`; models that reached it are unchanged, bit for bit).
            Needs ``shared_batches`` and an optimizer with a functional twin.
        finish_steps: L-BFGS iterations at most per model (with ``finish="lbfgs"``).

    Raises:
        ValueError: ``finish`` without ``shared_batches`` or a functional twin of the optimizer.
    """
    task = space.task
    budget = max_steps if max_steps is not None else 5 * task.recipe.steps
    optimizer = optimizer or task.recipe.optimizer
    lr = task.recipe.lr if lr is None else lr
    stacked = shared_batches is not None and batched_optimizer(optimizer) is not None
    if finish != "none" and not stacked:
        raise ValueError(f"finish={finish!r} trains the endpoints as one stack: it needs shared batches and an "
                         f"optimizer with a batched twin, got {optimizer!r}")  # fmt: skip
    if stacked:
        assert shared_batches is not None  # implied by ``stacked``
        inits = torch.stack([space.flatten(task.init_model(s)) for s in seeds])
        targets = torch.full((len(seeds),), threshold, dtype=torch.float64)
        schedule = BeadSchedule(max_steps=budget, lr=lr, optimizer=optimizer, check_every=check_every, finish=finish,
                                finish_steps=finish_steps)  # fmt: skip
        stack = train_beads(space, inits, targets, schedule, seed=shared_batches)
        diverged = ~torch.isfinite(stack.losses)
        return EndpointTraining(stack.beads, stack.losses, stack.best_losses, stack.reached, stack.steps, diverged)
    runs = [
        fit(task, seed, optimizer=optimizer, lr=lr, steps=budget, eval_every=check_every, stop_below=threshold)
        for seed in seeds
    ]
    finals = [run.eval_history[-1][1] if run.eval_history else run.eval_metrics["loss"] for run in runs]
    losses = torch.tensor(finals, dtype=torch.float64)
    diverged = torch.tensor([run.diverged for run in runs], dtype=torch.bool)
    return EndpointTraining(
        thetas=torch.stack([space.flatten(run.model) for run in runs]),
        losses=losses,
        best_losses=torch.tensor(
            [min((loss for _, loss in run.eval_history), default=final) for run, final in zip(runs, finals)],
            dtype=torch.float64,
        ),
        reached=~diverged & (losses <= threshold),
        steps=torch.tensor([run.steps for run in runs]),
        diverged=diverged,
    )


def train_to_threshold(
    task: Task,
    seed: int,
    threshold: float,
    *,
    max_steps: int | None = None,
    eval_every: int = 10,
    optimizer: str | None = None,
    lr: float | None = None,
) -> Tensor:
    """Train ``task.init_model(seed)`` alone until ``task.eval_loss <= threshold``; return its flat parameters ``(P,)``.

    Args:
        task: the task (its recipe gives the optimizer and learning rate unless overridden).
        seed: seed of the initial weights and the batch order.
        threshold: the evaluation loss to reach.
        max_steps: step budget (default five times the recipe's steps).
        eval_every: evaluate every this many steps.
        optimizer: optimizer name (default the recipe's).
        lr: learning rate (default the recipe's).

    Raises:
        ThresholdNotReached: with the best loss reached and what to change.
    """
    budget = max_steps if max_steps is not None else 5 * task.recipe.steps
    PROGRESS.info("endpoint seed %d: training to evaluation loss <= %.6g (at most %d steps)", seed, threshold, budget)
    trained = train_endpoints(ParamSpace(task), [seed], threshold, max_steps=max_steps, optimizer=optimizer, lr=lr,
                              check_every=eval_every)  # fmt: skip
    PROGRESS.info("endpoint seed %d: evaluation loss %.6g after %d steps", seed, float(trained.losses[0]),
                  int(trained.steps[0]))  # fmt: skip
    if not bool(trained.reached[0]):
        raise ThresholdNotReached(
            f"task {task.name!r}, seed {seed}: evaluation loss {float(trained.losses[0]):.6g} (best "
            f"{float(trained.best_losses[0]):.6g}) after {int(trained.steps[0])} steps is above the threshold "
            f"{threshold:.6g}"
            + (" (training diverged)" if bool(trained.diverged[0]) else "")
            + ". Raise the step budget (max_steps), raise the threshold, or change the learning rate."
        )
    return trained.thetas[0]


@dataclass
class EndpointConfig:
    """Where an endpoint comes from."""

    seed: int = 0
    """Train a fresh model from this seed until its evaluation loss is below the threshold."""
    checkpoint: str | None = None
    """Load instead: a ``metaopt fit`` checkpoint (``checkpoints/final.pt``) or a saved flat vector (``(P,)``)."""
    max_steps: int = 0
    """Training step budget (0: five times the task's recipe steps)."""

    def __post_init__(self) -> None:
        check_range(self, "seed", low=0, integer=True)
        check_range(self, "max_steps", low=0, integer=True)


def load_endpoint(space: ParamSpace, path: str | Path) -> Tensor:
    """A flat vector from a ``metaopt fit`` checkpoint or a saved tensor; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"endpoint checkpoint {path} does not exist; train one with `metaopt fit` or use seed=")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ValueError(f"endpoint checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from None
    if isinstance(state, Tensor):
        return space.check(state)
    if isinstance(state, dict) and "state_dict" in state:
        name = (state.get("spec") or {}).get("name")
        if name is not None and name != space.task.name:
            raise ValueError(
                f"endpoint checkpoint {path} is a {name!r} model, but the run's task is {space.task.name!r}"
            )
        model = space.task.init_model(0)
        try:
            model.load_state_dict(state["state_dict"])
        except RuntimeError as exc:
            raise ValueError(f"endpoint checkpoint {path} does not fit the task's model: {exc}") from None
        return space.flatten(model)
    raise ValueError(f"endpoint checkpoint {path} holds neither a fit checkpoint nor a parameter vector")


def make_endpoint(space: ParamSpace, config: EndpointConfig, threshold: float) -> Tensor:
    """The endpoint ``config`` describes, as a flat vector on the space's device."""
    if config.checkpoint:
        return load_endpoint(space, config.checkpoint)
    return train_to_threshold(space.task, config.seed, threshold, max_steps=config.max_steps or None)
