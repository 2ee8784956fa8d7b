"""AdamW with a cosine learning-rate schedule as one optimizer, so a comparison can tune it like any other.

The schedule is ``torch.optim.lr_scheduler.CosineAnnealingLR`` (Loshchilov & Hutter, SGDR, 2017, without restarts)
over the run's whole horizon, stepped after every optimizer step, on top of ``torch.optim.AdamW`` (Loshchilov &
Hutter, decoupled weight decay, 2019): the common strong baseline for a fixed training budget. Wrapping both in one
``torch.optim.Optimizer`` lets the comparison harness tune its peak learning rate on its grid and hand it the run's
horizon (``total_steps``) through the optimizer registry; the functional twin in :mod:`envs.training.functional`
replays the same schedule over stacked runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR

__all__ = ["AdamWCosine", "cosine_factor", "cosine_lr"]


def cosine_factor(epoch: int, total_steps: int) -> float:
    """CosineAnnealingLR's ratio of the rate above ``eta_min`` after ``epoch`` steps to that after one fewer."""
    return (1 + math.cos(math.pi * epoch / total_steps)) / (1 + math.cos(math.pi * (epoch - 1) / total_steps))


def cosine_lr(previous: float, base: float, update: int, total_steps: int, eta_min: float = 0.0) -> float:
    """The learning rate of update ``update`` (1-based) given the previous update's, as CosineAnnealingLR steps it.

    Torch's recursive form (not the closed form), so that a replay is bit for bit the scheduler's sequence.
    """
    if update == 1:
        return base
    epoch = update - 1
    if (epoch - 1 - total_steps) % (2 * total_steps) == 0:
        return previous + (base - eta_min) * (1 - math.cos(math.pi / total_steps)) / 2
    return cosine_factor(epoch, total_steps) * (previous - eta_min) + eta_min


class AdamWCosine(torch.optim.AdamW):
    """``torch.optim.AdamW`` whose learning rate follows a cosine from ``lr`` towards ``eta_min`` over ``total_steps``.

    Equal, step for step, to ``AdamW`` with ``CosineAnnealingLR(T_max=total_steps, eta_min=eta_min)`` stepped after
    each ``step()``.

    Args:
        params: parameters or parameter groups.
        lr: peak (initial) learning rate.
        betas: AdamW's moment decays.
        eps: AdamW's epsilon.
        weight_decay: AdamW's decoupled weight decay.
        amsgrad: AdamW's AMSGrad variant.
        total_steps: the horizon of the schedule (the comparison harness passes each run's number of steps).
        eta_min: the learning rate the cosine ends at.
        **options: further ``torch.optim.AdamW`` options (``foreach``, ``maximize``, ...).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        total_steps: int,
        eta_min: float = 0.0,
        **options: Any,
    ):
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be an integer >= 1 (the run's horizon), got {total_steps!r}")
        if not eta_min >= 0:
            raise ValueError(f"eta_min must be >= 0, got {eta_min!r}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, **options)
        self.total_steps = total_steps
        self.eta_min = eta_min
        self.schedule = CosineAnnealingLR(self, T_max=total_steps, eta_min=eta_min)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One AdamW step at the current learning rate, then the schedule's step."""
        loss = super().step(closure)
        self.schedule.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """AdamW's state and the schedule's position."""
        state = super().state_dict()
        state["schedule"] = self.schedule.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore AdamW's state and the schedule's position."""
        state_dict = dict(state_dict)
        schedule = state_dict.pop("schedule", None)
        super().load_state_dict(state_dict)
        if schedule is not None:
            self.schedule.load_state_dict(schedule)
