"""Optimizees that start inside a base run: at theta_t of a dataset window, with the batch stream at step t.

A window of a geodesic-target dataset (:class:`~metaopt.targets.TargetWindow`) starts at the base optimizer's
iterate theta_t. :func:`start_window` builds the :class:`~metaopt.inner.unroll.InnerState` there, with the targets
in its context for the geodesic objective. The rule's state at theta_t is zero, or warmed up
(:func:`warm_up`): the learned optimizer runs over the base run's gradients at theta_0 .. theta_{t-1} in the one
training loop, :func:`envs.fit`, while the parameters are put back on the base run's iterates after every step, so
the trajectory stays the base optimizer's and only the rule's state is kept.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from envs.task import Batch, Task
from envs.training.fit import fit
from metaopt.inner.unroll import InnerState
from metaopt.rules import LearnedRule, RuleState
from metaopt.shells import LearnedOptimizer
from metaopt.targets import TargetWindow

__all__ = ["batches_from", "start_window", "warm_state", "warm_up"]


def batches_from(problem: Task, seed: int, step: int) -> Iterator[Batch]:
    """The batch stream of run ``seed`` positioned at ``step`` (the batch the step-``step`` update uses)."""
    batches = problem.batches(seed)
    for _ in range(step):
        next(batches)
    return batches


def _load(model: nn.Module, flat: Tensor) -> None:
    """Copy the flat vector ``flat`` (``model.parameters()`` order) into ``model``."""
    with torch.no_grad():
        offset = 0
        for p in model.parameters():
            p.copy_(flat[offset : offset + p.numel()].view_as(p).to(p))
            offset += p.numel()


def warm_up(optimizer: LearnedOptimizer, model: nn.Module, problem: Task, seed: int, iterates: Tensor, t: int) -> None:
    """Run ``optimizer`` over the base run's gradients at theta_0 .. theta_{t-1}; ``model`` ends at theta_t.

    Gradients are those of the recorded iterates on the batches the base optimizer used; the updates the rule
    proposes are discarded (after every step the parameters are set to the base run's next iterate).

    Args:
        optimizer: the learned optimizer over ``model``'s parameters (its state is what this warms).
        model: the optimizee, reset to theta_0 here.
        problem: the problem instance of the base run.
        seed: the base run's seed (its batch order).
        iterates: ``(N + 1, P)`` the base run's iterates.
        t: number of steps to replay.
    """
    _load(model, iterates[0])
    fit(problem, seed, model=model, optimizer=optimizer, steps=t, evaluate=False,
        callback=lambda step, loss, model: _load(model, iterates[step]))  # fmt: skip
    optimizer.zero_grad(set_to_none=True)


def warm_state(net: LearnedRule, problem: Task, seed: int, iterates: Tensor, t: int) -> RuleState:
    """The rule's state after it has seen the base run's gradients at theta_0 .. theta_{t-1} (see :func:`warm_up`)."""
    model = problem.init_model(seed)
    optimizer = LearnedOptimizer(model.parameters(), rule=net)
    warm_up(optimizer, model, problem, seed, iterates, t)
    return net.join([optimizer.state[p] or net.init_state(p) for p in model.parameters()])


def start_window(
    task: Task, window: TargetWindow, net: LearnedRule, iterates: Tensor | None = None, warm: bool = False
) -> InnerState:
    """An optimizee at theta_t of ``window``, with its batch stream at step t and the targets in its context.

    Args:
        task: a task of the same name and structure as the window's (its problem instance is rebuilt from the
            window's spec through ``task.instance(window.seed)`` for problem families).
        window: the dataset window.
        net: the live rule.
        iterates: the base run's iterates (needed for ``warm``).
        warm: warm the rule's state up on the base run's gradients before theta_t.
    """
    problem = task.instance(window.seed)
    model = problem.init_model(window.seed)
    optimizer = LearnedOptimizer(model.parameters(), rule=net)
    if warm and window.t > 0:
        if iterates is None:
            raise ValueError("warm start needs the base run's iterates")
        warm_up(optimizer, model, problem, window.seed, iterates.to(window.start), window.t)
    _load(model, window.start)
    return InnerState(problem, model, optimizer, batches_from(problem, window.seed, window.t), step=window.t,
                      context={"targets": window.targets})  # fmt: skip
