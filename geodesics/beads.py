"""Training many beads at once: one batched optimizer over a ``(M, P)`` stack, with per-bead stopping.

Line 8 of the DSS paper's Algorithm 1 trains each new bead until its loss is below alpha * L0. Here all the beads of a
round are trained together: the losses and gradients of the whole stack come from one ``ParamSpace`` call per step,
the optimizer update is elementwise over the stack (Adam's or SGD's arithmetic, row by row identical to
``torch.optim``), and a bead stops moving as soon as a check finds its evaluation loss at or below its target. An
optional penalty (the spring and hyperplane terms of constrained DSS) adds its value and gradient per row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from envs.seeding import derive_seed
from geodesics.space import ParamSpace

__all__ = ["BeadTraining", "Penalty", "adam_update", "train_beads"]

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


def adam_update(
    theta: Tensor, grad: Tensor, m: Tensor, v: Tensor, step: int, lr: float, betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:  # fmt: skip
    """One Adam step in place on stacked rows, with ``torch.optim.Adam``'s arithmetic (no weight decay, no amsgrad)."""
    beta1, beta2 = betas
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias1 = 1 - beta1**step
    bias2_sqrt = math.sqrt(1 - beta2**step)
    denom = (v.sqrt() / bias2_sqrt).add_(eps)
    theta.addcdiv_(m, denom, value=-lr / bias1)


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
        optimizer: ``adam`` or ``sgd``.
        check_every: evaluate the active beads every this many steps (and before the first step).
        seed: seed of the training batch stream.
        penalty: optional extra term per bead (value and gradient), evaluated at every step.
        frozen: rows that must not move ``(M,)`` (bool); they are never trained and count as reached.
    """
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"bead optimizer must be adam or sgd, got {optimizer!r}")
    beads = space.check(inits, batched=True).clone()
    count = beads.shape[0]
    targets = targets.to(space.device, torch.float64)
    frozen = torch.zeros(count, dtype=torch.bool, device=space.device) if frozen is None else frozen.to(space.device)
    losses = torch.full((count,), math.inf, dtype=torch.float64, device=space.device)
    reached = frozen.clone()
    steps = torch.zeros(count, dtype=torch.long, device=space.device)
    m, v = torch.zeros_like(beads), torch.zeros_like(beads)
    batches = space.task.batches(derive_seed(seed, "beads"))

    def check() -> None:
        todo = (~reached).nonzero().squeeze(1)
        if len(todo):
            losses[todo] = space.batched_eval_loss(beads[todo]).to(torch.float64)
            reached[todo] = losses[todo] <= targets[todo]

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
        rows = beads[active]
        if optimizer == "adam":
            m_rows, v_rows = m[active], v[active]
            adam_update(rows, grads, m_rows, v_rows, step, lr)
            m[active], v[active] = m_rows, v_rows
        else:
            rows.add_(grads, alpha=-lr)
        beads[active] = rows
        steps[active] += 1
        if step % check_every == 0 or step == max_steps:
            check()
    return BeadTraining(beads, losses, reached, steps)
