"""The L2L meta-objective (Andrychowicz et al. 2016, eq. 3), ``loss``, and its held-out twin ``eval_loss``.

``loss`` is the weighted sum of the optimizee's training losses along the truncation, sum_{s=1..T} w_s f(theta_{t+s}),
weights 1 by default. ``eval_loss`` is the same sum with each iterate scored on a fresh batch of the task's held-out
split (``Task.valid_batches``; data tasks make one with ``valid_size``) instead of its next training batch: the
meta-objective of learned_optimization's and VeLO's generalisation-aware training, which rewards a rule for what it
does to unseen data rather than for fitting the training stream.

Both take one option, ``log`` (:class:`LossOptions`): score ``log f`` instead of ``f`` at each step, the meta-objective
of the hierarchical RNN optimizer of Wichrowska et al. (2017), there to put problems of different loss scales on one
footing. A sum of raw losses weighs a meta-batch's members, and the stages of one run, by the size of their loss: a
member at loss 2 outweighs one at 0.01 a hundredfold, and the late steps where a loss falls from 1e-3 to 1e-5 weigh
almost nothing. With ``log`` a halving counts the same wherever it happens, and the meta-gradient no longer depends on
the scale of any member's loss (scaling one member's loss by c adds a constant). This project adds a floor of 1e-12
under ``f`` (a loss that is exactly zero gives a finite value) and refuses negative losses, whose logarithm means
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metaopt.inner.unroll import Trajectory
from metaopt.objectives.registry import Objective, ObjectiveConfig

__all__ = ["LOG_FLOOR", "LossOptions", "eval_loss_objective", "heldout_loss", "loss_objective", "optimizee_loss"]

LOG_FLOOR = 1e-12
"""Added to every loss before its logarithm under ``log``: a loss of exactly zero scores log(1e-12), not -inf."""


@dataclass
class LossOptions:
    """Options of ``loss`` and ``eval_loss``."""

    log: bool = False
    """Score log(f + 1e-12) at each step instead of f: every member of a meta-batch, and every stage of a run, weighs
    by its relative progress rather than by the size of its loss (the losses must not be negative)."""


def optimizee_loss(trajectory: Trajectory, weights: list[float] | None = None, *, log: bool = False) -> Tensor:
    """sum_{s=1..T} w_s f(theta_{t+s}): the L2L meta-loss of one truncation.

    Args:
        trajectory: the truncation.
        weights: T weights; None for all ones.
        log: sum w_s log(f + 1e-12) instead.

    Raises:
        ValueError: ``log`` with a negative loss.
    """
    return _weighted(trajectory.losses[1:], weights, log)  # losses[0] is at the detached start point: no meta-gradient


def heldout_loss(trajectory: Trajectory, weights: list[float] | None = None, *, log: bool = False) -> Tensor:
    """sum_{s=1..T} w_s f_valid(theta_{t+s}): the held-out meta-loss of one truncation (``log``: of log f_valid).

    Raises:
        ValueError: the trajectory has no held-out losses (its optimizee was started without held-out batches), or
            ``log`` with a negative loss.
    """
    if trajectory.valid_losses is None:
        raise ValueError("the eval_loss objective needs held-out losses: start the optimizees with held_out=True")
    return _weighted(trajectory.valid_losses, weights, log)


def _weighted(losses: Tensor, weights: list[float] | None, log: bool = False) -> Tensor:
    if log:
        negative = losses.detach() < 0  # NaN is not negative: a diverged truncation goes on as without log
        if bool(negative.any()):
            value = float(losses.detach()[negative][0])
            raise ValueError(
                f"objective.options.log takes the logarithm of the optimizee's loss, which must not be negative; "
                f"a step's loss was {value:.4g} (use objective.options.log=false for this task)"
            )
        losses = torch.log(losses + LOG_FLOOR)
    if weights is None:
        return losses.sum()
    if len(weights) != losses.numel():
        raise ValueError(f"loss_weights has {len(weights)} entries but the truncation has {losses.numel()} steps")
    return (losses * torch.as_tensor(weights, dtype=losses.dtype, device=losses.device)).sum()


def _log(config: ObjectiveConfig) -> bool:
    """``options.log``; false where the factory is registered again without options (a user's renamed ``loss``)."""
    return bool(config.options.get("log", False))


def loss_objective(config: ObjectiveConfig) -> Objective:
    """The factory of ``loss``: :func:`optimizee_loss` with the config's ``loss_weights`` and ``options.log``."""
    log = _log(config)
    return lambda trajectory: optimizee_loss(trajectory, config.loss_weights, log=log)


def eval_loss_objective(config: ObjectiveConfig) -> Objective:
    """The factory of ``eval_loss``: :func:`heldout_loss` with the config's ``loss_weights`` and ``options.log``."""
    log = _log(config)
    return lambda trajectory: heldout_loss(trajectory, config.loss_weights, log=log)
