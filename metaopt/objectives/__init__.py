"""Meta-objectives: functions of a truncation's trajectory that meta-training minimises, found by name.

Members: ``loss`` (L2L, :mod:`~metaopt.objectives.loss`), ``eval_loss`` (the same on held-out batches) and
``geodesic`` (imitation of geodesic targets, :mod:`~metaopt.objectives.imitation`) and ``teacher`` (imitation of
the base optimizer's own iterates of a dataset window). A new objective is one module
and one ``register_objective`` line below.
"""

from metaopt.objectives.imitation import geodesic_objective, imitation_loss, teacher_objective
from metaopt.objectives.loss import LossOptions, eval_loss_objective, heldout_loss, loss_objective, optimizee_loss
from metaopt.objectives.registry import (
    ImitationOptions,
    Objective,
    ObjectiveConfig,
    list_objectives,
    make_objective,
    needs_held_out,
    needs_targets,
    register_objective,
)

register_objective("loss", loss_objective, config=LossOptions)
register_objective("eval_loss", eval_loss_objective, config=LossOptions, held_out=True)
register_objective("geodesic", geodesic_objective, config=ImitationOptions, targets=True)
register_objective("teacher", teacher_objective, config=ImitationOptions, targets=True)

__all__ = [
    "ImitationOptions",
    "LossOptions",
    "Objective",
    "ObjectiveConfig",
    "eval_loss_objective",
    "geodesic_objective",
    "heldout_loss",
    "imitation_loss",
    "list_objectives",
    "loss_objective",
    "make_objective",
    "needs_held_out",
    "needs_targets",
    "optimizee_loss",
    "register_objective",
    "teacher_objective",
]
