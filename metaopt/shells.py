"""The learned optimizer as a ``torch.optim.Optimizer``, and its differentiable twin for ``higher``; any rule.

Two thin shells over one functional core, :meth:`metaopt.rules.LearnedRule.step`: both gather the gradients of every
parameter into one flat vector, call the rule once, and add the update back per parameter. ``LearnedOptimizer``
updates parameters in place (any training loop, CPU or CUDA) and keeps each parameter's piece of the rule's state in
``self.state[p]``, so ``state_dict()``/``load_state_dict()`` carry it (between two steps over the same parameters it
keeps the rule's joined state instead, and splits it into ``self.state`` only when ``state`` is read).
``DifferentiableLearnedOptimizer`` (registered with ``higher.register_optim``) builds new parameter tensors instead,
so ``higher.innerloop_ctx(model, LearnedOptimizer(...))`` unrolls it and meta-gradients reach the rule's weights.

The rule is referenced by the optimizer object, never stored in ``param_groups``: higher deep-copies the groups,
and a copied rule would cut the twin off from the live meta-parameters.
"""

from __future__ import annotations

import copy
import math
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import higher
import torch
from higher.optim import DifferentiableOptimizer
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from typing_extensions import override

from metaopt.checkpoint import load_net
from metaopt.rules import LearnedRule, RuleState, detach_state

__all__ = ["DifferentiableLearnedOptimizer", "LearnedOptimizer"]


class LearnedOptimizer(torch.optim.Optimizer):
    """A meta-trained learned rule (by default the coordinatewise LSTM of Andrychowicz et al. 2016) as an optimizer.

    >>> opt = LearnedOptimizer(model.parameters(), checkpoint="runs/x/checkpoints/best.pt")
    >>> loss.backward(); opt.step(); opt.zero_grad()

    The ``torch.optim`` conventions hold: a group's ``lr`` multiplies the rule's update (default 1, so
    ``torch.optim.lr_scheduler`` schedules act on it), ``weight_decay`` decays the weights decoupled from the rule
    (p <- p - lr * weight_decay * p, as AdamW), other group keys are refused naming the valid ones, and
    ``state_dict()`` round-trips the rule's state. A step whose update has a NaN or infinite entry is skipped (the
    parameters and the rule's state stay as they were) and counted in :attr:`skipped_steps`.

    Args:
        params: parameters or parameter groups (keys ``params``, ``lr``, ``weight_decay``).
        checkpoint: a checkpoint written by ``metaopt train``, or the name of a shipped rule
            (:func:`metaopt.list_pretrained`); its rule is moved to the parameters' device.
        rule: a rule to use as is (shared, not copied: meta-training passes its live rule here).
        net: the same as ``rule`` (its name from before rules were pluggable).
        lr: multiplier of the update (default 1.0; None means 1.0).
        weight_decay: decoupled weight decay (default 0).
    """

    GROUP_KEYS = ("params", "lr", "weight_decay")
    """The keys a parameter group may carry."""

    _state: defaultdict[Tensor, Any]
    """Each parameter's piece of the rule's state, behind :attr:`state` (stale while ``_joined`` is set)."""
    _joined: _JoinedState | None
    """The joined state the next step starts from, when it was left by the last step (None: join ``_state``)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        checkpoint: str | Path | None = None,
        *,
        rule: LearnedRule | None = None,
        net: LearnedRule | None = None,
        lr: float | None = None,
        weight_decay: float = 0.0,
    ):
        lr = 1.0 if lr is None else lr
        for key, value in (("lr", lr), ("weight_decay", weight_decay)):
            if not (value >= 0 and value != float("inf")):
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
        if rule is not None and net is not None:
            raise ValueError("pass the learned rule as rule= (net= is its other name), not both")
        rule = rule if rule is not None else net
        if (checkpoint is None) == (rule is None):
            raise ValueError("LearnedOptimizer needs exactly one of checkpoint=PATH (from `metaopt train`) or net=")
        super().__init__(params, defaults={"lr": lr, "weight_decay": weight_decay})  # sets ``state``: the setter
        self.skipped_steps = 0
        """Steps skipped because the rule's update was not finite."""
        device = self.param_groups[0]["params"][0].device if self.param_groups[0]["params"] else None
        if rule is None:
            rule = load_net(checkpoint).requires_grad_(False)  # type: ignore[arg-type]
            if device is not None:
                rule = rule.to(device)
        elif device is not None and rule.device != device:
            raise ValueError(f"the rule is on {rule.device} but the parameters are on {device}; move one of them")
        self.rule = rule

    @override
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """``torch.optim.Optimizer.add_param_group``, refusing keys other than ``params``, ``lr``, ``weight_decay``."""
        unknown = sorted(set(param_group) - set(self.GROUP_KEYS))
        if unknown:
            raise ValueError(
                f"LearnedOptimizer parameter groups take {', '.join(self.GROUP_KEYS)}; unknown key(s): "
                f"{', '.join(unknown)}"
            )
        super().add_param_group(param_group)
        complex_params = [tuple(p.shape) for p in self.param_groups[-1]["params"] if p.is_complex()]
        if complex_params:
            self.param_groups.pop()
            raise ValueError(
                f"LearnedOptimizer does not take complex parameters (shapes {complex_params}): a learned rule reads "
                "real gradients; optimize torch.view_as_real(p) of a real parameter instead"
            )

    @override
    def __getstate__(self) -> dict[str, Any]:
        """What ``copy.deepcopy`` and pickle keep: torch's ``defaults``, ``state``, ``param_groups``, and the rule."""
        state = super().__getstate__()  # reads ``state``: the joined state is split into its pieces first
        state["rule"] = self.rule
        state["skipped_steps"] = self.skipped_steps
        return state

    def _rule_for(self, params: list[Tensor]) -> LearnedRule:
        """The rule a step over ``params`` runs: a float64 copy of it when a parameter is float64.

        Float64 parameters keep float64 state and updates; the copy follows the rule's weights (it is made again
        when they change in place, e.g. during meta-training).
        """
        rule = self.rule
        if rule.dtype == torch.float64 or not any(p.dtype == torch.float64 for p in params):
            return rule
        key = (id(rule), tuple(w._version for w in rule.parameters()))
        cached = self.__dict__.get("_double_rule")
        if cached is None or cached[0] != key:
            cached = (key, copy.deepcopy(rule).double())
            self.__dict__["_double_rule"] = cached
        return cached[1]

    @property
    def net(self) -> LearnedRule:
        """The rule (its name from before rules were pluggable)."""
        return self.rule

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """``torch.optim.Optimizer.load_state_dict``, refusing a state saved for parameters of other shapes.

        Raises:
            ValueError: the saved rule state of a parameter does not have the shapes the rule gives that parameter
                (the state_dict was saved for another model); nothing is loaded.
        """
        params = [p for group in self.param_groups for p in group["params"]]
        saved = [index for group in state_dict.get("param_groups", []) for index in group["params"]]
        for position, index in enumerate(saved[: len(params)]):
            piece = state_dict.get("state", {}).get(index)
            if not piece:
                continue
            param = params[position]
            expected = {key: tuple(value.shape) for key, value in self.rule.init_state(param).items()}
            found = {key: tuple(value.shape) for key, value in piece.items() if isinstance(value, Tensor)}
            if found != expected:
                raise ValueError(
                    f"optimizer state_dict does not fit parameter {position} (shape {tuple(param.shape)}): its saved "
                    f"rule state has shapes {found}, the rule needs {expected} for this parameter; the state_dict was "
                    "saved for another model"
                )
        super().load_state_dict(state_dict)

    @property  # type: ignore[override]
    def state(self) -> defaultdict[Tensor, Any]:
        """Each parameter's piece of the rule's state (what ``state_dict()`` saves), up to date whenever read.

        Between steps the shell keeps the rule's joined state of all coordinates (a ``_JoinedState``) instead of
        splitting it into pieces and joining them again at every step; a read of ``state`` (``state_dict()``,
        higher, a user) splits it into the pieces here first and drops it, so the next step joins the pieces again,
        with whatever the reader changed in them.
        """
        self._scatter_state()
        return self._state

    @state.setter
    def state(self, value: defaultdict[Tensor, Any]) -> None:  # torch.optim.Optimizer.__init__ and __setstate__
        self.__dict__["_joined"] = None
        self.__dict__["_state"] = value

    @override
    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        pieces = state.pop("state", None)
        super().__setstate__(state)
        if pieces is not None:  # through the setter: the dict has to reach ``_state`` (a property hides __dict__)
            self.state = pieces

    def _scatter_state(self) -> None:
        """Move the joined state into ``_state``, one piece per parameter, and forget it."""
        joined = self.__dict__.get("_joined")
        if joined is not None:
            self.__dict__["_joined"] = None
            for p, piece in zip(joined.params, joined.rule.split(joined.state, joined.params)):
                self._state[p].update(piece)

    @override
    @torch.compiler.disable  # inside a compiled training step the step runs eagerly: its rule state is Python-side
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params: list[Tensor] = []
        grads: list[Tensor] = []
        options: list[tuple[float, float]] = []
        for group in self.param_groups:
            lr, weight_decay = group["lr"], group["weight_decay"]
            for p in group["params"]:
                grad = p.grad
                if grad is not None:
                    if grad.is_sparse:
                        raise RuntimeError("LearnedOptimizer does not support sparse gradients")
                    params.append(p)
                    grads.append(grad)
                    options.append((lr, weight_decay))
        if not params:
            return loss
        rule = self._rule_for(params)
        joined: _JoinedState | None = self._joined
        dtype = joined.dtype if joined is not None and joined.rule_unchanged(rule) else rule.dtype
        signature = [(p.shape, p.dtype) for p in params]
        if joined is None or not joined.serves(params, signature, rule, dtype):
            self._scatter_state()
            pieces = [self._state[p] or rule.init_state(p) for p in params]
            joined = self._joined = _JoinedState(params, signature, rule, dtype, rule.join(pieces))
            for p in params:  # their state lives in ``joined`` now: keep one copy of it, not a stale second one
                piece = self._state[p]
                for key in [key for key, value in piece.items() if isinstance(value, Tensor)]:
                    del piece[key]
        flat_grads = _flatten_dense_tensors(grads).to(dtype)  # one call: the cat of every gradient, flattened
        update, new_state = rule.step(flat_grads, joined.state, params)
        if not _finite(update):
            self.skipped_steps += 1  # the guard: a non-finite update changes nothing
            return loss
        joined.state = new_state
        deltas = _unflatten_dense_tensors(update, params)  # one call: a view of each parameter's piece, shaped
        if joined.same_dtype and options.count(options[0]) == len(options):  # one group's options: foreach calls
            lr, weight_decay = options[0]
            if weight_decay:
                torch._foreach_mul_(params, 1 - lr * weight_decay)
            torch._foreach_add_(params, deltas, alpha=lr)
            return loss
        for p, delta, (lr, weight_decay) in zip(params, deltas, options):
            if weight_decay:
                p.mul_(1 - lr * weight_decay)
            p.add_(delta.to(p.dtype), alpha=lr)
        return loss


def _finite(update: Tensor) -> bool:
    """Whether every entry of ``update`` is finite: its least and greatest are (one pass; NaN propagates to both)."""
    if update.numel() == 0:
        return True
    low, high = torch.aminmax(update)
    return math.isfinite(low.item()) and math.isfinite(high.item())


class _JoinedState:
    """The rule's joined state of the parameters ``params`` (in step order), kept by ``LearnedOptimizer`` between steps.

    Args:
        params: the parameters with a gradient at the step that made the state, in step order.
        signature: ``(shape, dtype)`` of each of them.
        rule: the rule whose ``join`` (or ``step``) made ``state``.
        dtype: the rule's dtype then.
        state: the joined state.
    """

    def __init__(
        self,
        params: list[Tensor],
        signature: list[tuple[torch.Size, torch.dtype]],
        rule: LearnedRule,
        dtype: torch.dtype,
        state: RuleState,
    ):
        self.params = params
        self.signature = signature
        self.rule = rule
        self.dtype = dtype
        self.state = state
        self.same_dtype = all(param_dtype == dtype for _, param_dtype in signature)
        """Whether every parameter has the rule's dtype (the update needs no cast)."""
        self.weight = next(rule.parameters(), None)
        """One of the rule's weights, whose dtype follows the rule's (``rule.to(...)`` converts it in place)."""

    def rule_unchanged(self, rule: LearnedRule) -> bool:
        """Whether ``rule`` is the rule of this state, still in its dtype (cheaper than reading ``rule.dtype``)."""
        return rule is self.rule and self.weight is not None and self.weight.dtype == self.dtype

    def serves(
        self,
        params: list[Tensor],
        signature: list[tuple[torch.Size, torch.dtype]],
        rule: LearnedRule,
        dtype: torch.dtype,
    ) -> bool:
        """Whether this is the state a step over ``params`` (of ``signature``) with ``rule`` in ``dtype`` would join.

        The same parameter tensors (by identity: the state of an equal copy is not theirs) of the same shapes and
        dtypes, the same rule object in the same dtype.
        """
        return (
            rule is self.rule
            and dtype == self.dtype
            and signature == self.signature
            and all(map(operator.is_, params, self.params))
        )


class DifferentiableLearnedOptimizer(DifferentiableOptimizer):
    """The differentiable twin of :class:`LearnedOptimizer` (same core, new tensors instead of in-place updates).

    Built by higher from a ``LearnedOptimizer`` (``higher.innerloop_ctx`` or ``higher.optim.get_diff_optim``); the
    rule state of the source optimizer is copied in, so an unroll can start from a warmed-up state.

    Args:
        other: the ``LearnedOptimizer`` to mirror; its rule is shared.
        reference_params: the model's parameters, as higher passes them.
        first_order: feed the rule detached gradients, dropping the second-derivative terms of the meta-gradient
            (the simplification used in the L2L paper); the path through the updates is kept.
        **kwargs: higher's options (``fmodel``, ``device``, ``track_higher_grads``, ...).
    """

    def __init__(
        self,
        other: torch.optim.Optimizer,
        reference_params: Iterable[Tensor],
        *,
        first_order: bool = False,
        **kwargs: Any,
    ):
        if not isinstance(other, LearnedOptimizer):
            raise TypeError(f"DifferentiableLearnedOptimizer mirrors a LearnedOptimizer, got {type(other).__name__}")
        self.rule = other.rule
        self.first_order = first_order
        super().__init__(other, reference_params, **kwargs)
        # Between steps the state of all updated coordinates stays one joined RuleState, so the graph has no
        # per-step join/split of it; ``self.state`` receives per-parameter pieces only when the set of updated
        # parameters changes, and in ``carry_into``.
        self._joined: tuple[list[tuple[int, int]], list[Tensor], RuleState] | None = None

    @override
    def _update(self, grouped_grads: list[list[Tensor]], **kwargs: Any) -> None:
        slots = [
            (group_idx, p_idx, p, g)
            for group_idx, (group, grads) in enumerate(zip(self.param_groups, grouped_grads))
            for p_idx, (p, g) in enumerate(zip(group["params"], grads))
            if g is not None
        ]
        if not slots:
            return
        rule = self.rule
        keys = [(group_idx, p_idx) for group_idx, p_idx, _, _ in slots]
        params = [p for _, _, p, _ in slots]
        grads = torch.cat([g.reshape(-1) for *_, g in slots]).to(rule.dtype)
        if self.first_order:
            grads = grads.detach()
        if self._joined is not None and self._joined[0] == keys:
            state = self._joined[2]
        else:
            self._scatter_state()
            state = rule.join([self.state[group_idx][p_idx] or rule.init_state(p) for group_idx, p_idx, p, _ in slots])
        update, new_state = rule.step(grads, state, params)
        if not self._track_higher_grads:
            new_state = detach_state(new_state)
        self._joined = (keys, params, new_state)
        for (group_idx, p_idx, p, _), delta in zip(slots, update.split([p.numel() for p in params])):
            group = self.param_groups[group_idx]
            lr, weight_decay = group.get("lr", 1.0), group.get("weight_decay", 0.0)
            if weight_decay:  # the conventions of LearnedOptimizer.step (no guard here: the meta-loop skips NaNs)
                p = p * (1 - lr * weight_decay)
            delta = delta.view_as(p).to(p.dtype)
            group["params"][p_idx] = p + (delta if lr == 1 else lr * delta)

    def _scatter_state(self) -> None:
        """Move the joined state into ``self.state``, one piece per parameter."""
        if self._joined is not None:
            keys, params, state = self._joined
            for (group_idx, p_idx), piece in zip(keys, self.rule.split(state, params)):
                self.state[group_idx][p_idx].update(piece)
            self._joined = None

    def carry_into(self, optimizer: LearnedOptimizer) -> None:
        """Store this unroll's rule state, detached, in ``optimizer`` (the one it was built from).

        Truncated meta-training carries the state to the next truncation this way, cutting the graph between them.
        """
        self._scatter_state()
        for group_idx, group in enumerate(optimizer.param_groups):
            for p_idx, p in enumerate(group["params"]):
                piece = self.state[group_idx][p_idx]
                if piece:
                    optimizer.state[p].update(detach_state(piece))


higher.register_optim(LearnedOptimizer, DifferentiableLearnedOptimizer)
