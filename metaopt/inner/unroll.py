"""Truncated unrolls of the learned optimizer with ``higher`` (Andrychowicz et al. 2016, section 2 and 3).

An optimizee in the middle of training is an :class:`InnerState`: a problem instance, its model at theta_t, a plain
:class:`~metaopt.shells.LearnedOptimizer` holding the rule's state at step t, and the batch stream. :func:`unroll`
runs T differentiable steps from there and returns a :class:`Trajectory` (the losses and the iterates as flat
vectors, all on the graph of the meta-parameters); it then writes theta_{t+T} and the rule's state back into the
``InnerState``, detached, so the next truncation starts where this one stopped without backpropagating into it.

:func:`advance` moves an optimizee on by T plain steps of the same optimizer in :func:`envs.fit`, without a
meta-graph: for estimators that only need the losses (evolution strategies over the rule's weights).

A window does not have to start at a fresh initialisation: build an ``InnerState`` around any model (for instance one
loaded with a stored theta_t, :func:`metaopt.inner.windows.start_window`) and any optimizer state (for instance one
warmed up on earlier gradients).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import higher
import torch
from torch import Tensor, nn

from envs.task import Batch, Task
from envs.training.fit import fit
from metaopt.rules import LearnedRule
from metaopt.shells import DifferentiableLearnedOptimizer, LearnedOptimizer

__all__ = ["InnerState", "Trajectory", "advance", "start_episode", "unroll"]


@dataclass
class InnerState:
    """An optimizee carried between truncations (everything in it is detached from the meta-graph)."""

    task: Task
    """The problem instance being optimized (``task.instance(seed)`` for problem families)."""
    model: nn.Module
    """The optimizee at its current parameters theta_t."""
    optimizer: LearnedOptimizer
    """The learned optimizer over ``model``'s parameters; its ``state`` holds the rule's state at step t."""
    batches: Iterator[Batch]
    """The remaining training batches."""
    step: int = 0
    """Inner steps taken so far (t)."""
    next_batch: Batch | None = None
    """The batch of the next step when it was already drawn (the previous truncation scored theta_t on it)."""
    context: dict[str, Any] = field(default_factory=dict)
    """Whatever an objective needs besides losses and iterates (e.g. target points); handed to each trajectory."""
    valid_batches: Iterator[Batch] | None = None
    """Held-out batches (``task.valid_batches(seed)``) when the objective scores held-out losses; else None."""

    def take_batch(self) -> Batch:
        """The batch of the next step."""
        batch, self.next_batch = self.next_batch, None
        return batch if batch is not None else next(self.batches)


@dataclass
class Trajectory:
    """One truncation of T steps, differentiable with respect to the rule's weights."""

    losses: Tensor
    """``(T + 1,)``: f(theta_s) on the batch of step s, s = t..t+T; ``losses[0]`` is constant (theta_t is detached)."""
    iterates: Tensor
    """``(T + 1, P)``: theta_t .. theta_{t+T} flattened in ``model.parameters()`` order."""
    start_step: int
    """t, the inner step at which the window starts."""
    context: dict[str, Any] = field(default_factory=dict)
    """The ``InnerState.context`` of the window."""
    valid_losses: Tensor | None = None
    """``(T,)``: f(theta_{t+s}) on a fresh held-out batch each, s = 1..T, when the optimizee has held-out batches."""


def start_episode(task: Task, seed: int, rule: LearnedRule, *, held_out: bool = False) -> InnerState:
    """A fresh optimizee for run ``seed``: ``task.instance(seed)``, its ``init_model(seed)`` and ``batches(seed)``.

    With ``held_out`` it also carries ``valid_batches(seed)`` (raises :class:`~envs.errors.TaskError` when the task
    has no held-out split), and its unrolls record held-out losses.
    """
    problem = task.instance(seed)
    valid = problem.valid_batches(seed) if held_out else None
    model = problem.init_model(seed)
    optimizer = LearnedOptimizer(model.parameters(), rule=rule)
    return InnerState(problem, model, optimizer, problem.batches(seed), valid_batches=valid)


def unroll(inner: InnerState, steps: int, *, first_order: bool = False) -> Trajectory:
    """Run ``steps`` differentiable optimizer steps from ``inner`` and carry the result back into it.

    Args:
        inner: the window's start (modified: on return it holds theta_{t+steps} and the rule's new state).
        steps: T, the truncation length.
        first_order: drop the second-derivative terms (gradients enter the rule detached), as in the L2L paper.

    Returns:
        The trajectory; backpropagating a function of it reaches ``inner.optimizer.rule``'s weights.
    """
    model, task = inner.model, inner.task
    fmodel = higher.monkeypatch(model, copy_initial_weights=True)
    diffopt = higher.optim.get_diff_optim(inner.optimizer, model.parameters(), fmodel=fmodel, first_order=first_order)
    assert isinstance(diffopt, DifferentiableLearnedOptimizer)
    losses, valid_losses = [], []
    iterates = [_flat(fmodel.fast_params)]
    for _ in range(steps):
        loss = task.loss(fmodel, inner.take_batch())
        losses.append(loss)
        diffopt.step(loss)
        iterates.append(_flat(fmodel.fast_params))
        if inner.valid_batches is not None:
            valid_losses.append(task.loss(fmodel, next(inner.valid_batches)))
    inner.next_batch = next(inner.batches)
    losses.append(task.loss(fmodel, inner.next_batch))
    with torch.no_grad():
        for p, fast in zip(model.parameters(), fmodel.fast_params):
            p.copy_(fast)
    diffopt.carry_into(inner.optimizer)
    valid = torch.stack(valid_losses) if valid_losses else None
    trajectory = Trajectory(torch.stack(losses), torch.stack(iterates), inner.step, inner.context, valid)
    inner.step += steps
    return trajectory


def advance(inner: InnerState, steps: int) -> Tensor:
    """Run ``steps`` plain optimizer steps from ``inner`` (no meta-graph) and carry the result into it.

    The same steps as :func:`unroll` (the same batches, the same rule, updates in place), in :func:`envs.fit`.

    Args:
        inner: the optimizee (modified: it ends ``steps`` further, or where its loss became non-finite).
        steps: T.

    Returns:
        ``(T + 1,)`` float64 losses as in ``Trajectory.losses``: f(theta_s) on the batch of step s, then
        f(theta_{t+T}) on the next batch; shorter, ending with the non-finite loss, if the optimizee diverged.
    """
    pending = [inner.take_batch()] if inner.next_batch is not None else []
    result = fit(inner.task, model=inner.model, optimizer=inner.optimizer, steps=steps, evaluate=False,
                 batches=itertools.chain(pending, inner.batches))  # fmt: skip
    inner.step += result.steps
    losses = list(result.losses)
    if not result.diverged:
        inner.next_batch = next(inner.batches)
        with torch.no_grad():
            losses.append(float(inner.task.loss(inner.model, inner.next_batch)))
    return torch.tensor(losses, dtype=torch.float64)


def _flat(params: list[Tensor]) -> Tensor:
    return torch.cat([p.reshape(-1) for p in params])
