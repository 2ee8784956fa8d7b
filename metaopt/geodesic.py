"""The geodesic-following objective (the proposal): imitation of geodesic targets plus lambda times the L2L loss.

A window of the learned optimizer is scored by its distance to the target points of a geodesic inside the level set.
A window starts at a dataset state theta_t (:class:`~metaopt.targets.TargetWindow`): the optimizer runs T steps from
there and its iterates x_1 .. x_T are compared with the targets y_1 .. y_T,

    imitation = (1/T) sum_s ||x_s - y_s||^2 / ||y_T - y_0||^2,

normalised by the squared length of the window so that windows early and late in training weigh alike. The meta-loss
is ``imitation + loss_weight * sum_s f(x_s)`` (``loss_weight`` is the lambda of DESIGN.md section 7; 0 gives the
geodesic-only optimizer). The recurrent state at the window start is zero, or warmed up by running the network over
the base optimizer's gradients at theta_0 .. theta_{t-1} (:func:`warm_state`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from envs.task import Task
from metaopt.lstm import CoordinateLSTM, LSTMState, initial_state, lstm_step, pack_state
from metaopt.objectives import ObjectiveConfig, optimizee_loss, register_objective
from metaopt.optimizer import LearnedOptimizer
from metaopt.targets import TargetWindow, batches_from
from metaopt.unroll import InnerState, Trajectory

__all__ = ["imitation_loss", "start_window", "warm_state"]


def imitation_loss(iterates: Tensor, targets: Tensor) -> Tensor:
    """Mean squared distance of ``iterates[1:]`` to ``targets[1:]`` over the squared length of the window.

    Args:
        iterates: ``(T + 1, P)`` the optimizer's iterates from theta_t.
        targets: ``(T + 1, P)`` the target points (``targets[0]`` = theta_t, ``targets[-1]`` = theta_{t+T}).
    """
    if iterates.shape != targets.shape:
        raise ValueError(f"iterates {tuple(iterates.shape)} and targets {tuple(targets.shape)} must match")
    scale = (targets[-1] - targets[0]).pow(2).sum().clamp(min=torch.finfo(targets.dtype).tiny)
    return (iterates[1:] - targets[1:]).pow(2).sum(dim=1).mean() / scale


def _geodesic_objective(config: ObjectiveConfig):  # noqa: ANN202  (an Objective)
    def objective(trajectory: Trajectory) -> Tensor:
        targets = trajectory.context.get("targets")
        if targets is None:
            raise ValueError("the geodesic objective needs target points: train with targets=<metaopt targets run>")
        value = imitation_loss(trajectory.iterates, targets.to(trajectory.iterates))
        if config.loss_weight:
            value = value + config.loss_weight * optimizee_loss(trajectory, config.loss_weights)
        return value

    return objective


register_objective("geodesic", _geodesic_objective)


@torch.no_grad()
def warm_state(net: CoordinateLSTM, problem: Task, seed: int, iterates: Tensor, t: int) -> LSTMState:
    """The recurrent state after the network has seen the base run's gradients at theta_0 .. theta_{t-1}.

    Gradients are recomputed at the recorded iterates on the batches the base optimizer used; the updates the network
    proposes are discarded (the trajectory is the base optimizer's).
    """
    model = problem.init_model(seed)
    params = list(model.parameters())
    state = initial_state(net, sum(p.numel() for p in params))
    batches = problem.batches(seed)
    for s in range(t):
        offset = 0
        for p in params:
            p.copy_(iterates[s, offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        with torch.enable_grad():
            loss = problem.loss(model, next(batches))
            grads = torch.autograd.grad(loss, params)
        _, state = lstm_step(net, torch.cat([g.reshape(-1) for g in grads]).to(state[0].dtype), state)
    return state


def start_window(
    task: Task, window: TargetWindow, net: CoordinateLSTM, iterates: Tensor | None = None, warm: bool = False
) -> InnerState:
    """An optimizee at theta_t of ``window``, with its batch stream at step t and the targets in its context.

    Args:
        task: a task of the same name and structure as the window's (its problem instance is rebuilt from the
            window's spec through ``task.instance(window.seed)`` for problem families).
        window: the dataset window.
        net: the live network.
        iterates: the base run's iterates (needed for ``warm``).
        warm: warm the recurrent state up on the base run's gradients before theta_t.
    """
    problem = task.instance(window.seed)
    model = problem.init_model(window.seed)
    with torch.no_grad():
        offset = 0
        for p in model.parameters():
            p.copy_(window.start[offset : offset + p.numel()].view_as(p).to(p))
            offset += p.numel()
    optimizer = LearnedOptimizer(model.parameters(), net=net)
    if warm and window.t > 0:
        if iterates is None:
            raise ValueError("warm start needs the base run's iterates")
        packed = pack_state(warm_state(net, problem, window.seed, iterates.to(window.start), window.t))
        for p, piece in zip(model.parameters(), packed.split([p.numel() for p in model.parameters()])):
            optimizer.state[p]["hidden"] = piece
    return InnerState(problem, model, optimizer, batches_from(problem, window.seed, window.t), step=window.t,
                      context={"targets": window.targets})  # fmt: skip
