"""The geodesic-following objective (the proposal), registered as ``geodesic``.

Imitation of geodesic targets plus lambda times the L2L loss. A window of the learned optimizer is scored by its
distance to the target points of a geodesic inside the level set. A window starts at a dataset state theta_t
(:class:`~metaopt.targets.TargetWindow`, :func:`~metaopt.inner.windows.start_window`): the optimizer runs T steps from
there and its iterates x_1 .. x_T are compared with the targets y_1 .. y_T,

    imitation = (1/T) sum_s ||x_s - y_s||^2 / ||y_T - y_0||^2,

normalised by the squared length of the window so that windows early and late in training weigh alike. The meta-loss
is ``imitation + loss_weight * sum_s f(x_s)`` (``loss_weight`` is the lambda of the meta-objective; 0 gives the
geodesic-only optimizer).

``teacher`` is the same imitation with the base optimizer's own iterates theta_t .. theta_{t+T} of the window as the
targets (``trajectory.context["teacher"]``, put there for dataset windows by
:class:`~metaopt.training.DatasetWindows`): the teacher-imitation baseline of the optimizer-amalgamation line of work,
against which following a geodesic has to be measured.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metaopt.inner.unroll import Trajectory
from metaopt.objectives.loss import optimizee_loss
from metaopt.objectives.registry import ImitationOptions, Objective, ObjectiveConfig

__all__ = ["geodesic_objective", "imitation_loss", "teacher_objective"]


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


def _imitation_objective(config: ObjectiveConfig, key: str) -> Objective:
    """Imitation of the points ``trajectory.context[key]`` plus ``loss_weight`` x L2L."""
    weight = config.config_as(ImitationOptions).loss_weight

    def objective(trajectory: Trajectory) -> Tensor:
        targets = trajectory.context.get(key)
        if targets is None:
            raise ValueError(
                f"the {config.name} objective needs dataset windows: train with targets=<metaopt targets run>"
            )
        value = imitation_loss(trajectory.iterates, targets.to(trajectory.iterates))
        if weight:
            value = value + weight * optimizee_loss(trajectory, config.loss_weights)
        return value

    return objective


def geodesic_objective(config: ObjectiveConfig) -> Objective:
    """The factory of ``geodesic``: imitation of the window's geodesic target points plus ``loss_weight`` x L2L."""
    return _imitation_objective(config, "targets")


def teacher_objective(config: ObjectiveConfig) -> Objective:
    """The factory of ``teacher``: imitation of the base run's iterates of the window plus ``loss_weight`` x L2L."""
    return _imitation_objective(config, "teacher")
