"""AdamW with a cosine learning-rate schedule as one optimizer, so a comparison can tune it like any other.

The schedule is ``torch.optim.lr_scheduler.CosineAnnealingLR`` (Loshchilov & Hutter, SGDR, 2017, without restarts)
over the run's whole horizon, stepped after every optimizer step, on top of ``torch.optim.AdamW`` (Loshchilov &
Hutter, decoupled weight decay, 2019): the common strong baseline for a fixed training budget. Wrapping both in one
``torch.optim.Optimizer`` lets the comparison harness tune its peak learning rate on its grid and hand it the run's
horizon (``total_steps``) through the optimizer registry; the functional twin in :mod:`envs.training.functional`
replays the same schedule over stacked runs.

``warmup_steps`` > 0 starts the run with a linear warmup, as transformers are trained (GPT-2, Radford et al. 2019;
the recipe of most language-model papers since): the rate rises as ``lr * t / warmup_steps`` over the first
``warmup_steps`` updates, then follows the cosine from ``lr`` to ``eta_min`` over the remaining
``total_steps - warmup_steps`` (closed form: :func:`warmup_cosine_lr`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler

__all__ = ["AdamWCosine", "cosine_factor", "cosine_lr", "warmup_cosine_lr"]


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


def warmup_cosine_lr(base: float, update: int, total_steps: int, warmup_steps: int, eta_min: float = 0.0) -> float:
    """The learning rate of update ``update`` (1-based): a linear warmup to ``base``, then a cosine to ``eta_min``.

    ``base * update / warmup_steps`` for the first ``warmup_steps`` updates; after them
    ``eta_min + (base - eta_min) (1 + cos(pi k / K)) / 2`` with ``k = update - 1 - warmup_steps`` updates into the
    cosine's ``K = total_steps - warmup_steps``, held at ``eta_min`` past the horizon.
    """
    if update <= warmup_steps:
        return base * update / warmup_steps
    done = min(update - 1 - warmup_steps, total_steps - warmup_steps)
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * done / (total_steps - warmup_steps))) / 2


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
        warmup_steps: updates of linear warmup before the cosine (0: none, exactly ``CosineAnnealingLR``).
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
        warmup_steps: int = 0,
        **options: Any,
    ):
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be an integer >= 1 (the run's horizon), got {total_steps!r}")
        if not eta_min >= 0:
            raise ValueError(f"eta_min must be >= 0, got {eta_min!r}")
        bad_warmup = isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int)
        if bad_warmup or not 0 <= warmup_steps < total_steps:
            raise ValueError(
                f"warmup_steps must be an integer in [0, total_steps) = [0, {total_steps}), got {warmup_steps!r}"
            )
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, **options)
        self.total_steps = total_steps
        self.eta_min = eta_min
        self.warmup_steps = warmup_steps
        self.schedule: LRScheduler
        if warmup_steps:  # the factor of update k + 1 after k scheduler steps
            self.schedule = LambdaLR(
                self, lambda k: warmup_cosine_lr(1.0, k + 1, total_steps, warmup_steps, eta_min / lr if lr else 0.0)
            )
        else:
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
