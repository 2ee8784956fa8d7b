"""Truncated unrolls of the learned optimizer with ``higher`` (Andrychowicz et al. 2016, section 2 and 3).

An optimizee in the middle of training is an :class:`InnerState`: a problem instance, its model at theta_t, a plain
:class:`~metaopt.optimizer.LearnedOptimizer` holding the recurrent state at step t, and the batch stream. :func:`unroll`
runs T differentiable steps from there and returns a :class:`Trajectory` (the losses and the iterates as flat
vectors, all on the graph of the meta-parameters); it then writes theta_{t+T} and the recurrent state back into the
``InnerState``, detached, so the next truncation starts where this one stopped without backpropagating into it.

A window does not have to start at a fresh initialisation: build an ``InnerState`` around any model (for instance one
loaded with a stored theta_t) and any optimizer state (for instance one warmed up on earlier gradients).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import higher
import torch
from torch import Tensor, nn

from envs.task import Batch, Task
from metaopt.lstm import CoordinateLSTM
from metaopt.optimizer import DifferentiableLearnedOptimizer, LearnedOptimizer

__all__ = ["InnerState", "Trajectory", "start_episode", "unroll"]


@dataclass
class InnerState:
    """An optimizee carried between truncations (everything in it is detached from the meta-graph)."""

    task: Task
    """The problem instance being optimized (``task.instance(seed)`` for problem families)."""
    model: nn.Module
    """The optimizee at its current parameters theta_t."""
    optimizer: LearnedOptimizer
    """The learned optimizer over ``model``'s parameters; its ``state`` holds the recurrent state at step t."""
    batches: Iterator[Batch]
    """The remaining training batches."""
    step: int = 0
    """Inner steps taken so far (t)."""
    next_batch: Batch | None = None
    """The batch of the next step when it was already drawn (the previous truncation scored theta_t on it)."""
    context: dict[str, Any] = field(default_factory=dict)
    """Whatever an objective needs besides losses and iterates (e.g. target points); handed to each trajectory."""

    def take_batch(self) -> Batch:
        """The batch of the next step."""
        batch, self.next_batch = self.next_batch, None
        return batch if batch is not None else next(self.batches)

    def flat_params(self) -> Tensor:
        """theta_t as a flat ``(P,)`` vector (``model.parameters()`` order)."""
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])


@dataclass
class Trajectory:
    """One truncation of T steps, differentiable with respect to the network's weights."""

    losses: Tensor
    """``(T + 1,)``: f(theta_s) on the batch of step s, s = t..t+T; ``losses[0]`` is constant (theta_t is detached)."""
    iterates: Tensor
    """``(T + 1, P)``: theta_t .. theta_{t+T} flattened in ``model.parameters()`` order."""
    start_step: int
    """t, the inner step at which the window starts."""
    context: dict[str, Any] = field(default_factory=dict)
    """The ``InnerState.context`` of the window."""


def start_episode(task: Task, seed: int, net: CoordinateLSTM) -> InnerState:
    """A fresh optimizee for run ``seed``: ``task.instance(seed)``, its ``init_model(seed)`` and ``batches(seed)``."""
    problem = task.instance(seed)
    model = problem.init_model(seed)
    optimizer = LearnedOptimizer(model.parameters(), net=net)
    return InnerState(problem, model, optimizer, problem.batches(seed))


def unroll(inner: InnerState, steps: int, *, first_order: bool = False) -> Trajectory:
    """Run ``steps`` differentiable optimizer steps from ``inner`` and carry the result back into it.

    Args:
        inner: the window's start (modified: on return it holds theta_{t+steps} and the new recurrent state).
        steps: T, the truncation length.
        first_order: drop the second-derivative terms (gradients enter the LSTM detached), as in the L2L paper.

    Returns:
        The trajectory; backpropagating a function of it reaches ``inner.optimizer.net``'s weights.
    """
    model, task = inner.model, inner.task
    fmodel = higher.monkeypatch(model, copy_initial_weights=True)
    diffopt = higher.optim.get_diff_optim(inner.optimizer, model.parameters(), fmodel=fmodel, first_order=first_order)
    assert isinstance(diffopt, DifferentiableLearnedOptimizer)
    losses = []
    iterates = [_flat(fmodel.fast_params)]
    for _ in range(steps):
        loss = task.loss(fmodel, inner.take_batch())
        losses.append(loss)
        diffopt.step(loss)
        iterates.append(_flat(fmodel.fast_params))
    inner.next_batch = next(inner.batches)
    losses.append(task.loss(fmodel, inner.next_batch))
    with torch.no_grad():
        for p, fast in zip(model.parameters(), fmodel.fast_params):
            p.copy_(fast)
    diffopt.carry_into(inner.optimizer)
    trajectory = Trajectory(torch.stack(losses), torch.stack(iterates), inner.step, inner.context)
    inner.step += steps
    return trajectory


def _flat(params: list[Tensor]) -> Tensor:
    return torch.cat([p.reshape(-1) for p in params])
