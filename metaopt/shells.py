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
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import higher
import torch
from higher.optim import DifferentiableOptimizer
from torch import Tensor
from torch._utils import _flatten_dense_tensors
from typing_extensions import override

from metaopt.checkpoint import load_net
from metaopt.rules import LearnedRule, RuleState, detach_state
from metaopt.rules.base import apply_update, finite

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

    Divergence watch: the loss a ``step(closure)`` returns, or one passed to :meth:`report_loss`, is compared with the
    first such loss; when it becomes non-finite or exceeds ``divergence_ratio`` times the first one's magnitude, the
    optimizer warns once (a ``RuntimeWarning`` naming the two losses) and sets :attr:`diverged`. Nothing is watched
    when no loss is given (reading a loss costs a device synchronisation, which the plain ``step()`` never pays).

    Dtypes: the rule's state and update are kept in the rule's dtype, or in float64 when a parameter is float64 (the
    rule's weights are then used in a float64 copy, refreshed when they change). Complex parameters are refused:
    optimize ``torch.view_as_real`` of them instead (a real parameter of shape ``(..., 2)``), which treats the real
    and imaginary parts as two coordinates. Under ``DistributedDataParallel`` (``torchrun``) every rank steps the same
    whole tensors from the averaged gradients, as one process would; sharded parameters (a ``DTensor``, as FSDP2 and
    tensor parallelism make) are refused, because the rules normalise and orthogonalize whole tensors.
    ``copy.deepcopy`` and pickling keep the rule, the state and the counters, so a copy continues exactly as the
    original would. Under ``torch.compile`` the step runs eagerly (see :meth:`step`).

    Args:
        params: parameters or parameter groups (keys ``params``, ``lr``, ``weight_decay``).
        checkpoint: a checkpoint written by ``metaopt train``, or the name of a shipped rule
            (:func:`metaopt.list_pretrained`); its rule is moved to the parameters' device.
        rule: a rule to use as is (shared, not copied: meta-training passes its live rule here).
        net: the same as ``rule`` (its name from before rules were pluggable).
        lr: multiplier of the update (default 1.0; None means 1.0).
        weight_decay: decoupled weight decay, a fixed fraction ``lr * weight_decay`` of each weight per step (default
            0). The ``tiny`` rule's own ``weight_decay`` option (``options=``) instead scales with each tensor's step.
        divergence_ratio: the divergence watch's threshold (> 1; default 10).
        compile: run the rule's compiled in-place step where it has one (the ``tiny`` and ``lstm`` rules): compiled with
            ``torch.compile`` at the first step over a list of parameter shapes (seconds to a minute), then several
            times faster than the eager step on large models; where compilation fails the eager step runs, with one
            warning. Default False.
        options: rule options that replace the checkpoint's (those that keep its weights' shapes), e.g.
            ``{"adapt_rate": 0.03, "weight_decay": 0.3}`` on a shipped ``tiny`` rule; an unknown option or a bad value
            raises ``ValueError`` naming it. Only with ``checkpoint``.
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
        divergence_ratio: float = 10.0,
        compile: bool = False,
        options: Mapping[str, Any] | None = None,
    ):
        lr = 1.0 if lr is None else lr
        if not (divergence_ratio > 1 and divergence_ratio != float("inf")):
            raise ValueError(f"divergence_ratio must be a finite number > 1, got {divergence_ratio!r}")
        for key, value in (("lr", lr), ("weight_decay", weight_decay)):
            if not (value >= 0 and value != float("inf")):
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
        if rule is not None and net is not None:
            raise ValueError("pass the learned rule as rule= (net= is its other name), not both")
        rule = rule if rule is not None else net
        if (checkpoint is None) == (rule is None):
            raise ValueError("LearnedOptimizer needs exactly one of checkpoint=PATH (from `metaopt train`) or net=")
        if options and checkpoint is None:
            raise ValueError("options= change a checkpoint's rule; with rule= set them on the rule's config")
        super().__init__(params, defaults={"lr": lr, "weight_decay": weight_decay})  # sets ``state``: the setter
        self.skipped_steps = 0
        """Steps skipped because the rule's update was not finite."""
        self.divergence_ratio = float(divergence_ratio)
        """A reported loss above this many times the first one's magnitude counts as divergence."""
        self.first_loss: float | None = None
        """The first loss reported (by a closure or :meth:`report_loss`), the divergence watch's reference."""
        self.diverged = False
        """Whether a reported loss was non-finite or above ``divergence_ratio`` times the first (warned once)."""
        self.compile = bool(compile)
        """Whether the rule's compiled in-place step is used (where the rule has one)."""
        self._cast_rules: dict[torch.dtype, tuple[LearnedRule, LearnedRule]] = {}
        device = self.param_groups[0]["params"][0].device if self.param_groups[0]["params"] else None
        if rule is None:
            rule = load_net(checkpoint, options).requires_grad_(False)  # type: ignore[arg-type]
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
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for index, p in enumerate(params):
            if isinstance(p, Tensor) and p.is_complex():
                raise ValueError(
                    f"LearnedOptimizer does not support complex parameters (parameter {index} of group "
                    f"{len(self.param_groups)} is {p.dtype}); optimize torch.view_as_real(p) instead, a real view "
                    "whose last axis holds the real and imaginary parts"
                )
            if _is_sharded(p):
                raise ValueError(
                    f"LearnedOptimizer does not support sharded parameters (parameter {index} of group "
                    f"{len(self.param_groups)} is a {type(p).__name__}, as FSDP2 or tensor parallelism makes them): "
                    "the learned rules normalise, and may orthogonalize, each whole tensor, which a shard is not; "
                    "replicate the parameters (DistributedDataParallel, where every rank steps the same whole tensors)"
                )
        super().add_param_group({**param_group, "params": params})

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
    def __getstate__(self) -> dict[str, Any]:  # type: ignore[override]
        """``torch.optim.Optimizer``'s (defaults, state, groups) and the rule and counters, so copies continue alike."""
        state = super().__getstate__()  # reads ``state``: the joined state is split into the pieces first
        for key in ("rule", "skipped_steps", "divergence_ratio", "first_loss", "diverged", "compile"):
            state[key] = self.__dict__[key]
        return state

    @override
    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        pieces = state.pop("state", None)
        super().__setstate__(state)
        if pieces is not None:  # through the setter: the dict has to reach ``_state`` (a property hides __dict__)
            self.state = pieces
        self.__dict__["_cast_rules"] = {}
        self.__dict__.setdefault("compile", False)

    def report_loss(self, loss: float | Tensor) -> None:
        """Give the divergence watch a loss of the run (what ``step(closure)`` does with the closure's loss).

        Args:
            loss: the training loss now (a number or a one-element tensor).
        """
        value = float(loss)
        if self.first_loss is None:
            if math.isfinite(value):
                self.first_loss = value
            return
        if self.diverged:
            return
        if not math.isfinite(value) or value > self.divergence_ratio * max(abs(self.first_loss), 1e-12):
            self.diverged = True
            warnings.warn(
                f"LearnedOptimizer: the loss rose to {value:.4g} from {self.first_loss:.4g} at the start "
                f"(above {self.divergence_ratio:g} times it); the learned rule may be outside what it was "
                f"meta-trained on (steps skipped as non-finite so far: {self.skipped_steps}). Lower lr, or use Adam.",
                RuntimeWarning,
                stacklevel=2,
            )

    def _rule_in(self, rule: LearnedRule, dtype: torch.dtype) -> LearnedRule:
        """The copy of ``rule`` in a wider ``dtype``, holding the rule's current weights."""
        cached = self._cast_rules.get(dtype)
        if cached is None or cached[0] is not rule:
            self._cast_rules[dtype] = cached = (rule, copy.deepcopy(rule).to(dtype))
        else:  # refreshed at every step: a change made through ``.data`` leaves no version to compare
            with torch.no_grad():
                for mine, theirs in zip(cached[1].parameters(), rule.parameters()):
                    mine.copy_(theirs)
        return cached[1]

    def _scatter_state(self) -> None:
        """Move the joined state into ``_state``, one piece per parameter, and forget it."""
        joined = self.__dict__.get("_joined")
        if joined is not None:
            self.__dict__["_joined"] = None
            for p, piece in zip(joined.params, joined.step_rule.split(joined.state, joined.params)):
                self._state[p].update(piece)

    @override
    @torch.compiler.disable(recursive=True)
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step of the rule for every parameter with a gradient (see the class docstring).

        Under ``torch.compile`` the step is not traced: the compiled training step calls it as is (a graph break),
        so its results are eager's (the joined state, the rule's caches and the guard live outside any graph).

        Args:
            closure: re-evaluates the model and returns the loss (optional, as in ``torch.optim``); its loss feeds
                the divergence watch.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            if loss is not None:
                self.report_loss(loss)
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
        rule = self.rule
        joined: _JoinedState | None = self._joined
        signature = [(p.shape, p.dtype) for p in params]
        if joined is None or not joined.serves(params, signature, rule):
            self._scatter_state()
            dtype = rule.dtype
            if dtype != torch.float64 and any(param_dtype == torch.float64 for _, param_dtype in signature):
                dtype = torch.float64
            step_rule = rule if dtype == rule.dtype else self._rule_in(rule, dtype)
            pieces = [self._state[p] or step_rule.init_state(p) for p in params]
            joined = self._joined = _JoinedState(params, signature, rule, step_rule, step_rule.join(pieces))
            for p in params:  # their state lives in ``joined`` now: keep one copy of it, not a stale second one
                piece = self._state[p]
                for key in [key for key, value in piece.items() if isinstance(value, Tensor)]:
                    del piece[key]
        elif joined.step_rule is not rule:
            self._rule_in(rule, joined.dtype)  # the copy takes the rule's current weights
        applied = joined.step_rule.step_in_place(params, grads, joined.state, options, self.compile)
        if applied is not None:  # the rule's in-place path did the whole step (or refused a non-finite one)
            if not applied:
                self.skipped_steps += 1
            return loss
        flat_grads = _flatten_dense_tensors(grads).to(joined.dtype)  # one call: the cat of every gradient, flattened
        update, new_state = joined.step_rule.step(flat_grads, joined.state, params)
        if not finite(update):
            self.skipped_steps += 1  # the guard: a non-finite update changes nothing
            return loss
        joined.state = new_state
        apply_update(params, update, options)
        return loss


def _is_sharded(p: object) -> bool:
    """Whether ``p`` is a ``DTensor`` (a shard of a tensor, as FSDP2 or tensor parallelism make parameters).

    Looked up only when ``torch.distributed.tensor`` was imported: without it no ``DTensor`` exists (and importing it
    here would slow every command's start).
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(p, module.DTensor)


class _JoinedState:
    """The rule's joined state of the parameters ``params`` (in step order), kept by ``LearnedOptimizer`` between steps.

    Args:
        params: the parameters with a gradient at the step that made the state, in step order.
        signature: ``(shape, dtype)`` of each of them.
        rule: the optimizer's rule then.
        step_rule: the rule that steps: ``rule``, or its copy in a wider dtype (float64 parameters).
        state: the joined state, in ``step_rule``'s dtype.
    """

    def __init__(
        self,
        params: list[Tensor],
        signature: list[tuple[torch.Size, torch.dtype]],
        rule: LearnedRule,
        step_rule: LearnedRule,
        state: RuleState,
    ):
        self.params = params
        self.signature = signature
        self.rule = rule
        self.step_rule = step_rule
        self.dtype = step_rule.dtype
        """The dtype of the state, the gradients fed to the rule and its update."""
        self.state = state
        self.weights = list(rule.parameters())
        """The rule's weights, whose dtype follows the rule's (``rule.to(...)`` converts them in place)."""
        self.rule_dtype = self.weights[0].dtype if self.weights else None

    def serves(self, params: list[Tensor], signature: list[tuple[torch.Size, torch.dtype]], rule: LearnedRule) -> bool:
        """Whether this is the state a step over ``params`` (of ``signature``) with ``rule`` would join.

        The same parameter tensors (by identity: the state of an equal copy is not theirs) of the same shapes and
        dtypes, the same rule object in the same dtype.
        """
        return (
            rule is self.rule
            and (not self.weights or self.weights[0].dtype == self.rule_dtype)
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
