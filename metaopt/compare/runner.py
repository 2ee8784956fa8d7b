"""Training runs for the comparison harness: many at once (batched, functional) or one at a time (plain loop).

A run is ``(seed, lr)`` on a task: it trains ``task.instance(seed)`` from ``init_model(seed)`` on ``batches(seed)``,
so two runs with the same seed start from the same weights and see the same batches whatever the optimizer (the
pairing of the harness). Both paths record the same thing, the convention of :func:`envs.fit`: the training loss of
each step on that step's batch *before* the update, stopping at the first non-finite loss (kept in the curve), then
the evaluation-set loss of the final weights.

:func:`run_plain` is :func:`envs.fit`, the framework's one plain training loop, with a ``torch.optim`` optimizer from
the registry; it is the reference, the path of optimizers without a functional twin, and the one whose step time the
report quotes. :func:`run_batched` is the one *batched* loop: it stacks every run's parameters along a leading
dimension and advances all of them with one ``torch.func.vmap(torch.func.grad_and_value(...))`` call per step over
``functional_call``, with the pure optimizers of :mod:`envs.training.functional`; a run that diverges is frozen where it
stopped, exactly as the plain loop stops. It cannot be ``fit`` without losing what it is for (hundreds of runs in one
kernel call per step), so it stays the batched counterpart that ``fit`` is checked against.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, grad_and_value, vmap

from envs.task import Batch, Task
from envs.training.fit import fit
from envs.training.functional import FunctionalOptimizer, Params
from envs.training.optim import get_optimizer_spec, make_optimizer

__all__ = ["RunResult", "RunSpec", "run_batched", "run_plain"]


@dataclass(frozen=True)
class RunSpec:
    """One run: a seed (problem instance, initial weights, batch order) and a learning rate."""

    seed: int
    """Run seed."""
    lr: float | None
    """Learning rate; None for an optimizer without one (its constructor default is used)."""


@dataclass(frozen=True)
class RunResult:
    """What a run leaves behind."""

    losses: list[float]
    """Training loss of each step on its batch before the update; ends at the first non-finite value if diverged."""
    eval_loss: float
    """Evaluation-set loss of the final weights (of the weights where the run stopped, if it diverged)."""
    diverged: bool
    """True if a training loss became NaN or infinite."""
    step_seconds: tuple[float, ...] = ()
    """Wall time of each completed step (plain loop only): batch, forward, backward, optimizer step."""


def run_plain(task: Task, run: RunSpec, steps: int, optimizer: str, options: dict[str, Any] | None = None) -> RunResult:
    """Train one run with :func:`envs.fit` and the registered optimizer ``optimizer``.

    Args:
        task: the task (a problem family is resolved with ``task.instance(run.seed)``).
        run: seed and learning rate (None: the optimizer's own default, nothing is passed).
        steps: number of steps.
        optimizer: registry name (:mod:`envs.training.optim`).
        options: constructor options replacing the registered ones.
    """
    problem = task.instance(run.seed)
    model = problem.init_model(run.seed)
    options = get_optimizer_spec(optimizer).with_horizon(dict(options or {}), steps)
    opt = make_optimizer(optimizer, model.parameters(), lr=run.lr, **options)
    result = fit(problem, run.seed, model=model, optimizer=opt, steps=steps)
    return RunResult(result.losses, result.eval_metrics["loss"], result.diverged, tuple(result.step_seconds))


class _StackedBatches:
    """One batch stream per distinct seed, stacked each step and spread to the runs that share the seed."""

    def __init__(self, streams: list[Iterator[Batch]], seed_index: Tensor):
        self.streams = streams
        self.seed_index = seed_index
        self.identity = len(streams) == len(seed_index) and bool(
            (seed_index == torch.arange(len(streams), device=seed_index.device)).all()
        )
        self._last: list[Batch] = []
        self._stacked: Batch | None = None

    def next(self) -> Batch:
        """``(inputs, targets)`` with a leading run dimension."""
        batches = [next(stream) for stream in self.streams]
        reuse = self._stacked is not None and all(
            b[0] is old[0] and b[1] is old[1] for b, old in zip(batches, self._last)
        )  # full-batch tasks yield the same tensors every step: stack them once
        if not reuse:
            inputs = torch.stack([b[0] for b in batches])
            targets = torch.stack([b[1] for b in batches])
            if not self.identity:
                inputs, targets = inputs[self.seed_index], targets[self.seed_index]
            self._last, self._stacked = batches, (inputs, targets)
        assert self._stacked is not None
        return self._stacked


def run_batched(task: Task, runs: Sequence[RunSpec], steps: int, optimizer: FunctionalOptimizer) -> list[RunResult]:
    """Train every run of ``runs`` together, one vectorized step for all of them per training step.

    The instances of a problem family must share the model's structure and criterion (they differ in data and
    initial weights), which holds for :meth:`envs.Task.instance`.

    Args:
        task: the task.
        runs: the runs; their learning rates must be set.
        steps: number of steps.
        optimizer: the functional optimizer.

    Returns:
        One result per run, in the order of ``runs``.
    """
    if not runs:
        return []
    if any(run.lr is None for run in runs):
        raise ValueError("batched runs need a learning rate for every run")
    optimizer = optimizer.with_horizon(steps)
    seeds = list(dict.fromkeys(run.seed for run in runs))
    problems = [task.instance(seed) for seed in seeds]
    models = [problem.init_model(seed) for problem, seed in zip(problems, seeds)]
    skeleton, criterion, device = models[0], problems[0].criterion, problems[0].device
    position = {seed: i for i, seed in enumerate(seeds)}
    seed_index = torch.tensor([position[run.seed] for run in runs], device=device)
    params: Params = {
        name: torch.stack([dict(m.named_parameters())[name].detach() for m in models])[seed_index]
        for name, _ in skeleton.named_parameters()
    }
    lr = torch.tensor([float(run.lr) for run in runs], dtype=torch.float64, device=device)  # type: ignore[arg-type]
    batches = _StackedBatches([p.batches(s) for p, s in zip(problems, seeds)], seed_index)

    def loss_of(p: Params, inputs: Tensor, targets: Tensor) -> Tensor:
        return criterion(functional_call(skeleton, p, (inputs,)), targets)

    grad_step = vmap(grad_and_value(loss_of))
    state = optimizer.init(params)
    count = len(runs)
    curve = torch.full((steps, count), math.nan, dtype=torch.float64)
    alive = torch.ones(count, dtype=torch.bool, device=device)
    stopped_at = torch.full((count,), steps, dtype=torch.long)
    for step in range(steps):
        inputs, targets = batches.next()
        grads, losses = grad_step(params, inputs, targets)
        curve[step] = losses.detach().to("cpu", torch.float64)
        finite = torch.isfinite(losses)
        newly = alive & ~finite
        if bool(newly.any()):
            stopped_at[newly.cpu()] = step
            alive = alive & finite
        new_params, new_state = optimizer.update(params, grads, state, lr, step + 1)
        if bool(alive.all()):
            params, state = new_params, new_state
        else:  # a diverged run stays where its loss became non-finite, as the plain loop stops there
            params = _where(alive, new_params, params)
            state = {key: _where(alive, new_state[key], state[key]) for key in state}
            if not bool(alive.any()):
                break
    results: list[RunResult] = []
    for i, run in enumerate(runs):
        with torch.no_grad():
            for name, p in skeleton.named_parameters():
                p.copy_(params[name][i])
        end = int(stopped_at[i])
        diverged = end < steps
        losses_i = curve[: end + 1 if diverged else steps, i].tolist()
        results.append(RunResult(losses_i, problems[position[run.seed]].eval_loss(skeleton), diverged))
    return results


def _where(mask: Tensor, new: Params, old: Params) -> Params:
    """``new`` for runs where ``mask`` (R,) is set, ``old`` elsewhere."""
    return {name: torch.where(mask.reshape(-1, *([1] * (t.dim() - 1))), t, old[name]) for name, t in new.items()}
