"""Pure functional SGD, momentum, Nesterov, RMSprop, Adam, cosine-scheduled AdamW and Muon over stacked runs.

They are the batched twins of torch.optim.

The comparison harness advances many independent runs of one (task, optimizer) at once, and DSS trains all the beads
of a round together: every parameter tensor carries a leading run dimension ``R`` and every run has its own learning
rate. These optimizers are pure functions of
``(params, grads, state, lr, step)`` and follow the single-tensor code of ``torch.optim`` line by line (same defaults,
same order of operations), so a run here reproduces ``torch.optim`` up to the rounding of the batched gradient kernels.

:func:`functional_from_spec` maps a registry entry of :mod:`envs.training.optim` to its functional twin when its class
is one of ``torch.optim.SGD``, ``RMSprop``, ``Adam`` or ``AdamW`` with options implemented here; anything else (a
subclass, a learned optimizer, ``maximize=True``) has no twin and the harness runs it in a plain loop instead.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from envs.training.muon import MuonAdamW, matrix_mask, orthogonalize
from envs.training.optim import OptimizerSpec
from envs.training.schedules import AdamWCosine as TorchAdamWCosine
from envs.training.schedules import cosine_factor, warmup_cosine_lr

__all__ = [
    "Adam", "AdamWCosine", "FunctionalOptimizer", "Muon", "OptState", "Params", "RMSprop", "SGD", "functional_from_spec"
]  # fmt: skip

Params = dict[str, Tensor]
"""Parameters (or gradients, or one state buffer) by name; every tensor is ``(R, *shape)`` for ``R`` stacked runs."""
OptState = dict[str, Params]
"""Optimizer state: buffers by name (``"momentum"``, ``"exp_avg"``, ...), each shaped like the parameters."""


def per_run(values: Tensor, like: Tensor) -> Tensor:
    """``values: (R,)`` (float64) rounded to ``like``'s dtype and shaped ``(R, 1, ..., 1)`` to broadcast over ``like``.

    Scalars such as ``lr / bias_correction`` are formed in float64 and rounded once, as ``torch.optim`` does when it
    passes a Python float to a float32 kernel.
    """
    return values.to(dtype=like.dtype, device=like.device).reshape(-1, *([1] * (like.dim() - 1)))


class FunctionalOptimizer(ABC):
    """A pure optimizer over stacked runs: ``init(params) -> state``, ``update(...) -> (params, state)``."""

    @abstractmethod
    def init(self, params: Params) -> OptState:
        """The state before the first step (zero buffers; none for plain SGD)."""

    @abstractmethod
    def update(self, params: Params, grads: Params, state: OptState, lr: Tensor, step: int) -> tuple[Params, OptState]:
        """One step of every run.

        Args:
            params: ``(R, *shape)`` per name.
            grads: gradients of each run's loss, shaped like ``params``.
            state: from :meth:`init` or the previous update.
            lr: ``(R,)`` float64 learning rates, one per run.
            step: 1 for the first update (all runs advance in lockstep).
        """

    def with_horizon(self, steps: int) -> FunctionalOptimizer:
        """This optimizer for runs of ``steps`` steps (a schedule over the horizon needs it; the others ignore it)."""
        return self


def _zeros(params: Params) -> Params:
    return {name: torch.zeros_like(p) for name, p in params.items()}


@dataclass(frozen=True)
class SGD(FunctionalOptimizer):
    """``torch.optim.SGD``: optional heavy-ball or Nesterov momentum, dampening and L2 weight decay."""

    momentum: float = 0.0
    """Momentum factor (0: plain SGD)."""
    dampening: float = 0.0
    """Dampening of the gradient added to the momentum buffer (not applied on the first step, as in torch)."""
    weight_decay: float = 0.0
    """L2 penalty added to the gradient."""
    nesterov: bool = False
    """Nesterov momentum."""

    @override
    def init(self, params: Params) -> OptState:
        return {"momentum": _zeros(params)} if self.momentum != 0 else {}

    @override
    def update(self, params: Params, grads: Params, state: OptState, lr: Tensor, step: int) -> tuple[Params, OptState]:
        new_params: Params = {}
        new_buf: Params = {}
        for name, p in params.items():
            g = grads[name]
            if self.weight_decay != 0:
                g = g + self.weight_decay * p
            if self.momentum != 0:
                # torch starts the buffer as a copy of the first gradient, without dampening
                buf = g if step == 1 else state["momentum"][name] * self.momentum + (1 - self.dampening) * g
                new_buf[name] = buf
                g = g + self.momentum * buf if self.nesterov else buf
            new_params[name] = p - per_run(lr, p) * g
        return new_params, ({"momentum": new_buf} if self.momentum != 0 else {})


@dataclass(frozen=True)
class RMSprop(FunctionalOptimizer):
    """``torch.optim.RMSprop``: running mean of squared gradients, optional momentum and centering."""

    alpha: float = 0.99
    """Smoothing constant of the squared-gradient average."""
    eps: float = 1e-8
    """Added to the root of the average."""
    weight_decay: float = 0.0
    """L2 penalty added to the gradient."""
    momentum: float = 0.0
    """Momentum factor on the normalised step."""
    centered: bool = False
    """Normalise by the estimated variance instead of the raw second moment."""

    @override
    def init(self, params: Params) -> OptState:
        state = {"square_avg": _zeros(params)}
        if self.momentum > 0:
            state["momentum"] = _zeros(params)
        if self.centered:
            state["grad_avg"] = _zeros(params)
        return state

    @override
    def update(self, params: Params, grads: Params, state: OptState, lr: Tensor, step: int) -> tuple[Params, OptState]:
        new_params: Params = {}
        new_state: OptState = {key: {} for key in state}
        for name, p in params.items():
            g = grads[name]
            if self.weight_decay != 0:
                g = g + self.weight_decay * p
            square_avg = state["square_avg"][name] * self.alpha + (1 - self.alpha) * g * g
            new_state["square_avg"][name] = square_avg
            if self.centered:
                grad_avg = torch.lerp(state["grad_avg"][name], g, 1 - self.alpha)
                new_state["grad_avg"][name] = grad_avg
                avg = (square_avg - grad_avg * grad_avg).sqrt() + self.eps
            else:
                avg = square_avg.sqrt() + self.eps
            if self.momentum > 0:
                buf = state["momentum"][name] * self.momentum + g / avg
                new_state["momentum"][name] = buf
                new_params[name] = p - per_run(lr, p) * buf
            else:
                new_params[name] = p - per_run(lr, p) * (g / avg)
        return new_params, new_state


@dataclass(frozen=True)
class Adam(FunctionalOptimizer):
    """``torch.optim.Adam`` (and ``AdamW`` with ``decoupled_weight_decay``), with optional AMSGrad."""

    betas: tuple[float, float] = (0.9, 0.999)
    """Decay rates of the first and second moment estimates."""
    eps: float = 1e-8
    """Added to the bias-corrected root of the second moment."""
    weight_decay: float = 0.0
    """L2 penalty (added to the gradient) or, when decoupled, the AdamW decay factor."""
    amsgrad: bool = False
    """Use the running maximum of the second moment."""
    decoupled_weight_decay: bool = False
    """Decay the weights directly (AdamW) instead of adding an L2 term to the gradient."""

    @override
    def init(self, params: Params) -> OptState:
        state = {"exp_avg": _zeros(params), "exp_avg_sq": _zeros(params)}
        if self.amsgrad:
            state["max_exp_avg_sq"] = _zeros(params)
        return state

    @override
    def update(self, params: Params, grads: Params, state: OptState, lr: Tensor, step: int) -> tuple[Params, OptState]:
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        step_size = lr / bias_correction1  # float64, rounded once per run like torch's Python float
        new_params: Params = {}
        new_state: OptState = {key: {} for key in state}
        for name, p in params.items():
            g = grads[name]
            if self.weight_decay != 0:
                if self.decoupled_weight_decay:
                    p = p * per_run(1 - lr * self.weight_decay, p)
                else:
                    g = g + self.weight_decay * p
            exp_avg = torch.lerp(state["exp_avg"][name], g, 1 - beta1)
            exp_avg_sq = state["exp_avg_sq"][name] * beta2 + (1 - beta2) * g * g
            new_state["exp_avg"][name] = exp_avg
            new_state["exp_avg_sq"][name] = exp_avg_sq
            second = exp_avg_sq
            if self.amsgrad:
                second = torch.maximum(state["max_exp_avg_sq"][name], exp_avg_sq)
                new_state["max_exp_avg_sq"][name] = second
            denom = second.sqrt() / bias_correction2_sqrt + self.eps
            new_params[name] = p - per_run(step_size, p) * (exp_avg / denom)
        return new_params, new_state


@dataclass(frozen=True)
class AdamWCosine(Adam):
    """:class:`envs.training.schedules.AdamWCosine`: AdamW with ``CosineAnnealingLR``'s schedule over the horizon.

    Every run's learning rate follows torch's recursion from its own peak ``lr``; the current rates are kept in the
    state (``schedule/lr``, one per run), so a frozen (diverged) run keeps its place like every other buffer.
    """

    decoupled_weight_decay: bool = True
    weight_decay: float = 1e-2
    total_steps: int | None = None
    """Horizon of the schedule; None until :meth:`with_horizon` sets it to the run's number of steps."""
    eta_min: float = 0.0
    """The learning rate the cosine ends at."""
    warmup_steps: int = 0
    """Updates of linear warmup before the cosine (:func:`envs.training.schedules.warmup_cosine_lr`)."""

    @override
    def with_horizon(self, steps: int) -> FunctionalOptimizer:
        return self if self.total_steps is not None else dataclasses.replace(self, total_steps=steps)

    @override
    def init(self, params: Params) -> OptState:
        state = super().init(params)
        first = next(iter(params.values()))
        state["schedule"] = {"lr": torch.zeros(first.shape[0], dtype=torch.float64, device=first.device)}
        return state

    @override
    def update(self, params: Params, grads: Params, state: OptState, lr: Tensor, step: int) -> tuple[Params, OptState]:
        if self.total_steps is None:
            raise ValueError("AdamWCosine needs its horizon: call with_horizon(steps) before the first update")
        if self.warmup_steps:  # the closed form (the torch optimizer's LambdaLR), each run from its own peak
            peak = lr.to(torch.float64)
            if step <= self.warmup_steps:
                scheduled = peak * (step / self.warmup_steps)
            else:
                shape = warmup_cosine_lr(1.0, step, self.total_steps, self.warmup_steps)  # cosine part, in [0, 1]
                scheduled = self.eta_min + (peak - self.eta_min) * shape
        elif step == 1:
            scheduled = lr.to(torch.float64)
        else:  # the same float64 operations as the scheduler's Python floats, one per run
            previous, epoch, total = state["schedule"]["lr"], step - 1, self.total_steps
            if (epoch - 1 - total) % (2 * total) == 0:
                scheduled = previous + (lr - self.eta_min) * (1 - math.cos(math.pi / total)) / 2
            else:
                scheduled = cosine_factor(epoch, total) * (previous - self.eta_min) + self.eta_min
        adam_state = {key: value for key, value in state.items() if key != "schedule"}
        new_params, new_state = super().update(params, grads, adam_state, scheduled, step)
        new_state["schedule"] = {"lr": scheduled}
        return new_params, new_state


@dataclass(frozen=True)
class Muon(FunctionalOptimizer):
    """:class:`envs.training.muon.MuonAdamW`: Muon on the weight matrices, AdamW on the rest, one rate per run.

    The matrices are chosen from the parameters' order and shapes (without the run dimension) as the class chooses
    them; each run's matrices are orthogonalized as one batch.
    """

    momentum: float = 0.95
    """Muon's momentum."""
    nesterov: bool = True
    """Muon's Nesterov momentum."""
    ns_steps: int = 5
    """Newton-Schulz iterations."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's moment decays."""
    eps: float = 1e-8
    """AdamW's epsilon."""
    weight_decay: float = 0.0
    """Decoupled weight decay of both parts."""
    matrices: str = "all"
    """Which tensors of two or more dimensions get Muon's step: all, hidden or none."""

    def _chosen(self, params: Params) -> set[str]:
        mask = matrix_mask([tuple(p.shape[1:]) for p in params.values()], self.matrices)
        return {name for name, chosen in zip(params, mask) if chosen}

    @override
    def init(self, params: Params) -> OptState:
        chosen = self._chosen(params)
        rest = {name: p for name, p in params.items() if name not in chosen}
        return {"momentum_buffer": _zeros({name: params[name] for name in chosen}), **self._adamw().init(rest)}

    def _adamw(self) -> Adam:
        return Adam(betas=self.betas, eps=self.eps, decoupled_weight_decay=True, weight_decay=self.weight_decay)

    @override
    def update(self, params: Params, grads: Params, state: OptState, lr: Tensor, step: int) -> tuple[Params, OptState]:
        chosen = self._chosen(params)
        rest = [name for name in params if name not in chosen]
        adamw_state = {key: value for key, value in state.items() if key != "momentum_buffer"}
        rest_params, new_state = self._adamw().update({n: params[n] for n in rest}, {n: grads[n] for n in rest},
                                                      adamw_state, lr, step)  # fmt: skip
        new_params: Params = {}
        buffers: Params = {}
        for name, p in params.items():
            if name not in chosen:
                new_params[name] = rest_params[name]
                continue
            g = grads[name]
            if self.weight_decay != 0:
                p = p * per_run(1 - lr * self.weight_decay, p)
            buffer = state["momentum_buffer"][name] * self.momentum + g
            buffers[name] = buffer
            direction = g + self.momentum * buffer if self.nesterov else buffer
            flat = direction.reshape(direction.shape[0], direction.shape[1], -1)
            update = orthogonalize(flat, self.ns_steps).view_as(p)
            new_params[name] = p - per_run(lr * (0.2 * math.sqrt(max(flat.shape[1:]))), p) * update
        return new_params, {"momentum_buffer": buffers, **new_state}


_TWINS: dict[type, tuple[type[FunctionalOptimizer], dict[str, Any]]] = {
    torch.optim.SGD: (SGD, {}),
    torch.optim.RMSprop: (RMSprop, {}),
    torch.optim.Adam: (Adam, {}),
    torch.optim.AdamW: (Adam, {"decoupled_weight_decay": True}),
    TorchAdamWCosine: (AdamWCosine, {}),
    MuonAdamW: (Muon, {}),
}
"""Exact ``torch.optim`` classes with a functional twin (a subclass may change ``step``, so it gets none)."""

_IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")
"""Constructor options that choose a kernel, not the maths; ignored."""


def functional_from_spec(spec: OptimizerSpec, overrides: dict[str, Any] | None = None) -> FunctionalOptimizer | None:
    """The functional twin of a registered optimizer, or None when it has none (it then runs in a plain loop).

    Defaults are read from the ``torch.optim`` constructor's signature, so a twin uses exactly torch's defaults;
    registered options and ``overrides`` replace them. An option the twin does not implement means no twin.
    """
    if not isinstance(spec.factory, type) or spec.factory not in _TWINS:
        return None
    twin, fixed = _TWINS[spec.factory]
    signature = inspect.signature(spec.factory)
    options = {
        name: param.default
        for name, param in signature.parameters.items()
        if param.default is not inspect.Parameter.empty
    }
    options.update(spec.options)
    options.update(overrides or {})
    options.update(fixed)
    options.pop("lr", None)
    for flag in _IMPLEMENTATION_FLAGS:
        options.pop(flag, None)
    if options.pop("maximize", False):
        return None
    if "betas" in options:
        options["betas"] = tuple(float(b) for b in options["betas"])
    known = {f.name for f in dataclasses.fields(typing.cast(Any, twin))}
    if not set(options) <= known:
        return None
    return twin(**options)
