"""The learned-rule interface: a network that maps the flat gradients of all coordinates (and its state) to updates.

A :class:`LearnedRule` is the whole maths of a learned optimizer; the optimizer shells of :mod:`metaopt.shells` only
gather gradients, call it once per step and write the update back. Its state has two forms:

- a :data:`ParamState` per parameter tensor (a dict of tensors), what ``torch.optim.Optimizer.state[p]`` holds, so
  ``state_dict()`` carries it and a parameter that joins later starts from :meth:`LearnedRule.init_state`;
- a :data:`RuleState` for all coordinates of one step, whatever the rule finds fastest to carry between steps (the
  LSTM keeps a tuple of ``(N, H)`` tensors), made by :meth:`LearnedRule.join` and taken apart by
  :meth:`LearnedRule.split`. The shells never look inside either.

Shapes: ``N`` coordinates in all, the gradients of the parameters ``params`` flattened and concatenated in order.
One :meth:`LearnedRule.step` call covers every coordinate of every parameter: never a Python loop over tensors.
A rule is an ``nn.Module`` whose parameters are the meta-parameters; ``config`` (a dataclass) rebuilds it, and is
what a checkpoint records beside the rule's registered name.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch._utils import _unflatten_dense_tensors

__all__ = [
    "MAX_LAYOUTS",
    "LearnedRule",
    "ParamState",
    "RuleState",
    "apply_update",
    "detach_state",
    "finite",
    "plain_tensors",
    "warn_compile_unavailable",
]

MAX_LAYOUTS = 32
"""Lists of parameter shapes whose constants (indices, averaging matrices) a rule keeps; the oldest goes first."""

ParamState = dict[str, Tensor]
"""The rule's state of one parameter tensor, as stored in ``Optimizer.state[p]`` (e.g. ``{"hidden": (n, L, 2, H)}``)."""
RuleState = Any
"""The rule's state of all coordinates of one step (a tuple or dict of tensors; the rule's own layout)."""


def detach_state(state: RuleState) -> RuleState:
    """``state`` with every tensor detached (cuts the meta-graph between truncations); tuples, lists, dicts kept."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, dict):
        return {key: detach_state(value) for key, value in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(value) for value in state)
    return state


def plain_tensors() -> bool:
    """Whether a rule's step may take its in-place fast path: no autograd recording and no ``torch.func`` transform.

    Under ``no_grad`` outside ``vmap``/``grad`` the step's tensors are plain, so a rule may write into buffers
    (``out=``, in-place ops) and process coordinates in blocks; inside a transform (``vmap`` populations of ES) or
    with autograd it must stay functional.
    """
    return not torch.is_grad_enabled() and torch._C._functorch.peek_interpreter_stack() is None


def finite(update: Tensor) -> bool:
    """Whether every entry of ``update`` is finite: its least and greatest are (one pass; NaN propagates to both)."""
    if update.numel() == 0:
        return True
    low, high = torch.aminmax(update)
    return math.isfinite(low.item()) and math.isfinite(high.item())


def apply_update(params: Sequence[Tensor], update: Tensor, options: Sequence[tuple[float, float]]) -> None:
    """The drop-in step's last move: ``p <- p (1 - lr wd) + lr delta`` for each parameter and its piece of ``update``.

    ``update`` is the flat update of ``params`` (in order), ``options`` each one's ``(lr, weight_decay)``; with one
    dtype and one group's options it is two ``foreach`` calls.
    """
    params = list(params)
    deltas = list(_unflatten_dense_tensors(update, params))  # one call: a view of each parameter's piece, shaped
    if all(p.dtype == update.dtype for p in params) and options.count(options[0]) == len(options):
        lr, weight_decay = options[0]
        if weight_decay:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        torch._foreach_add_(params, deltas, alpha=lr)
        return
    for p, delta, (lr, weight_decay) in zip(params, deltas, options):
        if weight_decay:
            p.mul_(1 - lr * weight_decay)
        p.add_(delta.to(p.dtype), alpha=lr)


class LearnedRule(nn.Module, ABC):
    """A learned update rule over flat gradients. Subclasses set ``Config`` and implement the four methods.

    Args:
        config: the rule's options; default ``Config()``.
    """

    Config: ClassVar[type]
    """Dataclass of the rule's options (recorded in checkpoints; ``rule.options`` of ``metaopt train``)."""

    def __init__(self, config: Any = None):
        super().__init__()
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def init_state(self, param: Tensor) -> ParamState:
        """The state of ``param`` before its first step (in the rule's dtype, on ``param``'s device)."""

    @abstractmethod
    def join(self, pieces: Sequence[ParamState]) -> RuleState:
        """The states of several parameters as one state for all their coordinates, in order, in the rule's dtype."""

    @abstractmethod
    def split(self, state: RuleState, params: Sequence[Tensor]) -> list[ParamState]:
        """Inverse of :meth:`join`: one piece per parameter of ``params`` (their shapes give the sizes)."""

    @abstractmethod
    def step(self, grads: Tensor, state: RuleState, params: Sequence[Tensor]) -> tuple[Tensor, RuleState]:
        """One step for every coordinate: the functional core both optimizer shells call.

        Args:
            grads: ``(N,)`` gradients of ``params``, flattened and concatenated, in the rule's dtype.
            state: the coordinates' state (from :meth:`join` or the previous step).
            params: the parameter tensors the gradients belong to (their values and shapes, for rules that read
                them; on the meta-graph inside an unroll).

        Returns:
            ``(update (N,), new_state)``; the caller adds ``update`` to the parameters.
        """

    def step_in_place(
        self,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        state: RuleState,
        options: Sequence[tuple[float, float]],
        compile: bool = False,
    ) -> bool | None:
        """Optionally, the drop-in step done in place: ``params`` and ``state`` updated where they live.

        ``LearnedOptimizer`` calls it first, under ``no_grad``; a rule without such a path returns None (the default)
        and the shell runs :meth:`step`. It must give :meth:`step`'s results (followed by the shell's
        ``p <- p (1 - lr wd) + lr update``) and change nothing when an update is not finite.

        Args:
            params: the parameters with a gradient, in step order.
            grads: their gradients.
            state: their joined state (from :meth:`join`), to update in place.
            options: ``(lr, weight_decay)`` of each parameter's group.
            compile: use a compiled kernel where the rule has one.

        Returns:
            True: applied; False: an update was not finite, nothing changed; None: not handled, nothing changed.
        """
        return None

    @property
    def separable(self) -> bool:
        """Whether a step over several models' tensors, concatenated, is each model's own step.

        True when nothing in a step couples tensors: every quantity is per coordinate or per tensor, and none depends
        on a tensor's place in the list. Meta-training may then step a whole meta-batch with one call
        (:func:`metaopt.inner.stacked.unroll_many`). False unless a rule says otherwise.
        """
        return False

    @property
    def separable_by_model(self) -> bool:
        """Whether :meth:`step_models`, told which model each tensor belongs to, is each model's own step.

        True where :attr:`separable`; a rule whose step couples a model's tensors (a global factor from all of them)
        may say True and take the models into account in :meth:`step_models`.
        """
        return self.separable

    def step_models(
        self, grads: Tensor, state: RuleState, params: Sequence[Tensor], models: Tensor
    ) -> tuple[Tensor, RuleState]:
        """:meth:`step` over the concatenated tensors of several models, ``models (T,)`` the model of each tensor.

        It must give, for every model, :meth:`step` over that model's tensors alone (to rounding). The default, for a
        separable rule, is :meth:`step` itself.
        """
        if not self.separable:
            raise ValueError(f"rule {type(self).__name__} couples tensors in its step and does not step models apart")
        return self.step(grads, state, params)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the rule's weights (gradients are cast to it)."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Device of the rule's weights."""
        return next(self.parameters()).device


def warn_compile_unavailable(rule: str, error: Exception, warned: list[bool], stacklevel: int) -> None:
    """One warning per process and rule (``warned`` is the rule's flag) that its compiled step is unavailable."""
    if not warned:
        warned.append(True)
        warnings.warn(
            f"{rule} rule: the compiled step is unavailable ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "the eager step runs instead",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )
