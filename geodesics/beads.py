"""Training many beads at once: one batched optimizer over a ``(M, P)`` stack, with per-bead stopping.

Line 8 of the DSS paper's Algorithm 1 trains each new bead until its loss is below alpha * L0. Here all the beads of a
round are trained together: the losses and gradients of the whole stack come from one ``ParamSpace`` call per step,
the optimizer update is elementwise over the stack (the functional twin, in :mod:`envs.functional`, of a registered
``torch.optim`` optimizer: row by row its arithmetic), and a bead stops moving as soon as a check finds its evaluation
loss at or below its target. An optional penalty (the spring and hyperplane terms of constrained DSS) adds its value
and gradient per row. The endpoint trainer (:mod:`geodesics.endpoints`) trains batches of fresh models the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from envs.functional import FunctionalOptimizer, functional_from_spec
from envs.optim import get_optimizer_spec, list_optimizers
from envs.seeding import derive_seed
from geodesics.space import ParamSpace

__all__ = [
    "BeadTraining",
    "Penalty",
    "batched_optimizer",
    "batched_optimizers",
    "require_batched_optimizer",
    "train_beads",
]

Penalty = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``thetas (M, P) -> (values (M,), grads (M, P))`` added to the task loss of each bead."""


@dataclass
class BeadTraining:
    """Result of :func:`train_beads`."""

    beads: Tensor
    """Trained beads ``(M, P)``."""
    losses: Tensor
    """Evaluation loss of each bead at its last check ``(M,)``."""
    reached: Tensor
    """Which beads reached their target ``(M,)`` (bool)."""
    steps: Tensor
    """Optimizer steps each bead took ``(M,)``."""
    best_losses: Tensor
    """Lowest evaluation loss of each bead over its checks ``(M,)`` (inf for frozen rows)."""


def batched_optimizer(name: str) -> FunctionalOptimizer | None:
    """The functional twin of the optimizer registered as ``name`` (:mod:`envs.optim`), or None when it has none."""
    return functional_from_spec(get_optimizer_spec(name))


def batched_optimizers() -> list[str]:
    """Names of the registered optimizers that can train a stack of beads (those with a functional twin)."""
    return [name for name in list_optimizers() if batched_optimizer(name) is not None]


def require_batched_optimizer(name: str) -> FunctionalOptimizer:
    """The functional twin of ``name``; a clear error naming the valid choices when it has none.

    Raises:
        ValueError: ``name`` has no batched twin.
    """
    rule = batched_optimizer(name)
    if rule is None:
        raise ValueError(
            f"optimizer {name!r} has no batched twin to train beads with; choose one of "
            f"{', '.join(batched_optimizers())}"
        )
    return rule


def train_beads(
    space: ParamSpace,
    inits: Tensor,
    targets: Tensor,
    *,
    max_steps: int,
    lr: float,
    optimizer: str = "adam",
    check_every: int = 10,
    seed: int = 0,
    penalty: Penalty | None = None,
    frozen: Tensor | None = None,
) -> BeadTraining:
    """Train each row of ``inits`` until its evaluation loss is at most ``targets[row]``, or ``max_steps`` run out.

    Args:
        space: the parameter space (its task gives the training batches and the evaluation set).
        inits: starting beads ``(M, P)`` (not modified).
        targets: per-bead target losses ``(M,)``.
        max_steps: optimizer steps at most per bead.
        lr: learning rate.
        optimizer: a registered optimizer with a functional twin (:func:`batched_optimizers`).
        check_every: evaluate the active beads every this many steps (and before the first step).
        seed: seed of the training batch stream.
        penalty: optional extra term per bead (value and gradient), evaluated at every step.
        frozen: rows that must not move ``(M,)`` (bool); they are never trained and count as reached.
    """
    rule = require_batched_optimizer(optimizer)
    beads = space.check(inits, batched=True).clone()
    count = beads.shape[0]
    targets = targets.to(space.device, torch.float64)
    frozen = torch.zeros(count, dtype=torch.bool, device=space.device) if frozen is None else frozen.to(space.device)
    losses = torch.full((count,), math.inf, dtype=torch.float64, device=space.device)
    best = losses.clone()
    reached = frozen.clone()
    steps = torch.zeros(count, dtype=torch.long, device=space.device)
    state = rule.init({"theta": beads})
    rates = torch.full((count,), float(lr), dtype=torch.float64, device=space.device)
    batches = space.task.batches(derive_seed(seed, "beads"))

    def check() -> None:
        todo = (~reached).nonzero().squeeze(1)
        if len(todo):
            losses[todo] = space.batched_eval_loss(beads[todo]).to(torch.float64)
            reached[todo] = losses[todo] <= targets[todo]
            best[todo] = torch.minimum(best[todo], losses[todo])

    check()
    for step in range(1, max_steps + 1):
        active = (~reached).nonzero().squeeze(1)
        if len(active) == 0:
            break
        batch = next(batches)
        _, grads = space.batched_value_and_grad(beads[active], batch)
        if penalty is not None:
            grads = grads + penalty(beads)[1][active]
        grads = torch.nan_to_num(grads, nan=0.0, posinf=0.0, neginf=0.0)
        rows = {key: {"theta": buffers["theta"][active]} for key, buffers in state.items()}
        moved, rows = rule.update({"theta": beads[active]}, {"theta": grads}, rows, rates[active], step)
        beads[active] = moved["theta"]
        for key, buffers in rows.items():
            state[key]["theta"][active] = buffers["theta"]
        steps[active] += 1
        if step % check_every == 0 or step == max_steps:
            check()
    return BeadTraining(beads, losses, reached, steps, best)
