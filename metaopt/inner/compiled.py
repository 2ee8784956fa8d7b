"""Truncations through one compiled inner step per optimizee structure: ``truncated_backprop``'s ``compile`` option.

:func:`~metaopt.inner.unroll.unroll` steps an optimizee through ``higher``, which takes each gradient with
``torch.autograd.grad`` inside the step: ``torch.compile`` cannot trace through that, so every inner step dispatches
its few hundred small operations (and their backward nodes) one by one. Written functionally, an inner step is
``torch.func.grad_and_value`` of the task's loss (the parameters swapped in with ``functional_call``), then the rule's
own ``step`` and ``p (1 - lr wd) + lr update``: the same arithmetic as ``DifferentiableLearnedOptimizer`` (run eagerly
it gives ``higher``'s trajectory and meta-gradient bit for bit), and a function that ``torch.compile`` compiles whole,
forward and backward, so the meta-gradient flows through inductor's generated code.

:class:`CompiledUnroll` keeps one compiled step (and one compiled loss, for the held-out and final losses) per
optimizee structure: the same task object, model structure, parameter shapes and dtypes, optimizer options, rule and
order. Its :meth:`~CompiledUnroll.unroll` returns what ``unroll`` returns and leaves the optimizee as ``unroll`` leaves
it. What it costs: each structure compiles on its first truncation (tens of seconds with an empty inductor cache, a
few with a warm one, which lives on disk and serves later processes), so it pays when a run meets few structures many
times (one task, or a family of a few): not for a family of many widths, depths and activations. The compiled
arithmetic rounds differently from the eager one (float32 rounding, which long truncations can amplify); with the
``eager`` backend it is the eager arithmetic.

Optimizees it does not compile run the ``higher`` unroll (the same results): those of a problem family whose every
seed is a task object of its own (``Task.instance`` overridden, as the quadratics: each would compile on its own),
models with buffers (a compiled ``functional_call`` would not update them as the eager forward does), optimizers that
do not hold exactly the model's parameters, and models with a parameter that gets no gradient (``higher`` leaves it
out of the rule's step; ``grad_and_value`` would give it zeros), checked once per structure on its first batch.
Optimizees share a compiled step when their model prints alike (``repr``): what the forward pass reads besides its
parameters and buffers (the augmentations' factors) must show in the printout, as the stacked meta-batch requires.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call, grad_and_value

from envs.task import Task
from metaopt.inner.stacked import TaskLossModule, moved
from metaopt.inner.unroll import InnerState, Trajectory, unroll
from metaopt.rules import LearnedRule, detach_state

__all__ = ["BACKENDS", "CompiledUnroll", "functional_step"]

BACKENDS = ("inductor", "aot_eager", "eager")
"""``torch.compile`` backends: ``inductor`` generates code (the fast one); the other two trace the step and run it
with the eager kernels (for checking)."""

MAX_STRUCTURES = 64
"""Compiled steps kept; the least recently used is dropped (and compiled again if it comes back)."""

_RECOMPILES = 4 * MAX_STRUCTURES + 16
"""Dynamo's limit on compiled entries per function, raised while these steps run: every structure adds two (the first
step's rule state is off the meta-graph, the later ones' on it) under one code object."""


@dataclass
class _Step:
    """A structure's compiled functions and what maps the optimizer's parameters onto them."""

    step: Callable[[list[Tensor], object, Tensor, Tensor], tuple[list[Tensor], object, Tensor]] | None
    """``(params, state, inputs, targets) -> (new params, new state, loss)``; None: this structure runs ``higher``."""
    loss: Callable[[list[Tensor], Tensor, Tensor], Tensor] | None
    """``(params, inputs, targets) -> loss``."""
    order: list[int]
    """For each parameter in ``model.parameters()`` order, its index in the optimizer's order (the flat iterates')."""


class CompiledUnroll:
    """:func:`~metaopt.inner.unroll.unroll` through a compiled functional step, one per optimizee structure.

    Args:
        rule: the live rule every optimizee's optimizer uses.
        backend: a ``torch.compile`` backend (:data:`BACKENDS`).
    """

    def __init__(self, rule: LearnedRule, backend: str = "inductor"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.rule = rule
        self.backend = backend
        self._steps: OrderedDict[tuple, _Step] = OrderedDict()

    def unroll(self, inner: InnerState, steps: int, *, first_order: bool = False) -> Trajectory:
        """``unroll(inner, steps, first_order=...)``, through the structure's compiled step where it has one."""
        if inner.optimizer.rule is not self.rule:
            raise ValueError("the optimizee's optimizer does not use this CompiledUnroll's rule")
        compiled = self._structure(inner, first_order)
        if compiled.step is None or compiled.loss is None:
            return unroll(inner, steps, first_order=first_order)
        params = [p for group in inner.optimizer.param_groups for p in group["params"]]
        rule = self.rule
        state = rule.join([inner.optimizer.state[p] or rule.init_state(p) for p in params])
        current = [p.detach() for p in params]
        losses: list[Tensor] = []
        valid_losses: list[Tensor] = []
        iterates = [self._flat(current, compiled.order)]
        with torch._dynamo.config.patch(cache_size_limit=_RECOMPILES, accumulated_cache_size_limit=_RECOMPILES):
            for _ in range(steps):
                current, state, loss = compiled.step(current, state, *inner.take_batch())
                losses.append(loss)
                iterates.append(self._flat(current, compiled.order))
                if inner.valid_batches is not None:
                    valid_losses.append(compiled.loss(current, *next(inner.valid_batches)))
            inner.next_batch = next(inner.batches)
            losses.append(compiled.loss(current, *inner.next_batch))
        with torch.no_grad():
            for p, new in zip(params, current):
                p.copy_(new)
        for p, piece in zip(params, rule.split(state, current)):
            inner.optimizer.state[p].update(detach_state(piece))
        valid = torch.stack(valid_losses) if valid_losses else None
        trajectory = Trajectory(torch.stack(losses), torch.stack(iterates), inner.step, inner.context, valid)
        inner.step += steps
        return trajectory

    @staticmethod
    def _flat(params: list[Tensor], order: list[int]) -> Tensor:
        return torch.cat([params[i].reshape(-1) for i in order])

    def _structure(self, inner: InnerState, first_order: bool) -> _Step:
        """The compiled functions of ``inner``'s structure (compiled lazily, on the first call)."""
        model, optimizer = inner.model, inner.optimizer
        params = [p for group in optimizer.param_groups for p in group["params"]]
        options = [(float(g["lr"]), float(g["weight_decay"])) for g in optimizer.param_groups for _ in g["params"]]
        shapes = tuple((tuple(p.shape), p.dtype) for p in params)
        key = (id(inner.task), type(model), repr(model), shapes, tuple(options), first_order)
        found = self._steps.get(key)
        if found is not None:
            self._steps.move_to_end(key)
            return found
        position = {p: i for i, p in enumerate(params)}
        model_params: list[Tensor] = list(model.parameters())
        order = [position.get(p, -1) for p in model_params]
        found = _Step(None, None, order)
        if self._compilable(inner, params, model_params):
            found = self._compile(inner, params, options, first_order, order)
        self._steps[key] = found
        if len(self._steps) > MAX_STRUCTURES:
            self._steps.popitem(last=False)
        return found

    @staticmethod
    def _compilable(inner: InnerState, params: list[Tensor], model_params: list[Tensor]) -> bool:
        """Fixed data, no buffers, the optimizer holds the model's parameters, each gets a gradient (first batch)."""
        if type(inner.task).instance is not Task.instance:  # a problem family: a task object per optimizee
            return False
        if any(True for _ in inner.model.buffers()) or len(params) != len(model_params):
            return False
        if {id(p) for p in params} != {id(p) for p in model_params}:
            return False
        batch = inner.take_batch()
        inner.next_batch = batch  # only looked at: the unroll takes it
        with torch.enable_grad():
            grads = torch.autograd.grad(inner.task.loss(inner.model, batch), params, allow_unused=True)
        return all(g is not None for g in grads)

    def _compile(self, inner: InnerState, params: list[Tensor], options: list[tuple[float, float]], first_order: bool,
                 order: list[int]) -> _Step:  # fmt: skip
        step, loss_of = functional_step(inner, self.rule, params, options, first_order=first_order)
        compile_ = torch.compile(backend=self.backend)
        return _Step(compile_(step), compile_(loss_of), order)


def functional_step(
    inner: InnerState,
    rule: LearnedRule,
    params: list[Tensor],
    options: list[tuple[float, float]] | None = None,
    *,
    first_order: bool = False,
) -> tuple[Callable[[list[Tensor], object, Tensor, Tensor], tuple[list[Tensor], object, Tensor]],
           Callable[[list[Tensor], Tensor, Tensor], Tensor]]:  # fmt: skip
    """``(step, loss)``: the inner step of ``inner``'s structure written functionally, and its loss, not compiled.

    ``step(params, state, inputs, targets) -> (new params, new state, loss)`` is ``DifferentiableLearnedOptimizer``'s
    step (the same arithmetic); ``loss(params, inputs, targets)`` the task's loss with ``params`` swapped into the
    model (``inner.model`` serves as the skeleton of every optimizee of its structure).

    Args:
        inner: an optimizee of the structure.
        rule: the rule.
        params: the model's parameters in the order the step takes them (the optimizer's).
        options: ``(lr, weight_decay)`` of each; default ``(1, 0)``, meta-training's.
        first_order: feed the rule the gradient detached.
    """
    by_param: dict[Tensor, str] = {p: name for name, p in inner.model.named_parameters()}
    names = ["model." + by_param[p] for p in params]
    sizes = [p.numel() for p in params]
    moves = options if options is not None else [(1.0, 0.0)] * len(params)
    loss_module = TaskLossModule(inner.task, inner.model)

    def loss_of(params: list[Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
        return functional_call(loss_module, dict(zip(names, params)), (inputs, targets))

    def step(
        params: list[Tensor], state: object, inputs: Tensor, targets: Tensor
    ) -> tuple[list[Tensor], object, Tensor]:
        grads, loss = grad_and_value(loss_of)(params, inputs, targets)
        flat = torch.cat([g.reshape(-1) for g in grads]).to(rule.dtype)
        if first_order:
            flat = flat.detach()
        update, new_state = rule.step(flat, state, params)
        new = [moved(p, delta, lr, wd) for p, delta, (lr, wd) in zip(params, update.split(sizes), moves)]
        return new, new_state, loss

    return step, loss_of
