"""A meta-batch unrolled together: one rule call per step for every optimizee, same-shape optimizees evaluated stacked.

:func:`unroll_many` returns what :func:`~metaopt.inner.unroll.unroll` returns for each optimizee of a meta-batch (the
same trajectories, and the same optimizees and rule states carried into the next truncation), computed together:

* the optimizees are grouped by :func:`stack_key`: the same task object (so the same data and loss), the same model
  structure, the same parameter shapes and optimizer options. A group's parameters are stacked, ``(G, *shape)`` per
  parameter, and its losses are one ``torch.func.vmap`` call of ``task.loss`` with the parameters swapped into the
  model (a group of one is called directly, and the members of a model with buffers one by one: vmap would share the
  buffers);
* one ``torch.autograd.grad`` call gives every optimizee's gradient (the losses are independent, so the gradient of
  their sum is each one's own);
* one rule call steps every coordinate of every optimizee. This is exact only for a rule whose step is
  :attr:`~metaopt.rules.LearnedRule.separable` (per coordinate or per tensor): its tensors are the optimizees'
  parameters in the order parameter, then optimizee within a group, then group. A rule that is
  :attr:`~metaopt.rules.LearnedRule.separable_by_model` (the tiny rule's global scheduler: one factor per model from
  all its tensors) is told which optimizee each tensor belongs to (:meth:`~metaopt.rules.LearnedRule.step_models`).

The arithmetic is that of ``DifferentiableLearnedOptimizer`` (gradients cast to the rule's dtype, taken without a
graph when ``first_order``; ``p (1 - lr wd) + lr update``). Every parameter must get a gradient (autograd raises
otherwise), and the optimizer must hold every parameter of the model, as meta-training's do. Only the rounding
differs from the per-optimizee unrolls (batched matrix products, sums over more coordinates in one call): trajectories
and meta-gradients agree to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from envs.task import Batch, Task
from metaopt.inner.unroll import InnerState, Trajectory
from metaopt.rules import LearnedRule, ParamState, RuleState, detach_state
from metaopt.rules.base import finite

__all__ = ["TaskLossModule", "advance_many", "moved", "stack_key", "unroll_many"]


def stack_key(inner: InnerState) -> tuple:
    """Optimizees with equal keys are evaluated as one stacked model: same task, model structure and options."""
    model = inner.model
    params = tuple((name, tuple(p.shape), p.dtype) for name, p in model.named_parameters())
    options = tuple((len(g["params"]), g["lr"], g["weight_decay"]) for g in inner.optimizer.param_groups)
    return (id(inner.task), type(model), repr(model), params, options, inner.valid_batches is None)


@dataclass
class _Group:
    """Optimizees of one stack key, their parameters stacked (the arrays are rebuilt at every step)."""

    members: list[int]
    """Indices of the optimizees in the meta-batch."""
    names: list[str]
    """Parameter names in the optimizer's step order."""
    model_names: list[str]
    """Parameter names in ``model.parameters()`` order (the order of the flat iterates)."""
    params: dict[str, Tensor]
    """``(G, *shape)`` per name, on the meta-graph; a group of one keeps the parameter's own shape (no stacking, so
    no select on the graph: most groups of a varied family are single)."""
    options: dict[str, tuple[float, float]]
    """``(lr, weight_decay)`` per name."""
    loss: Callable[[dict[str, Tensor], list[Batch]], Tensor]
    """``(params, one batch per member) -> (G,)`` losses."""

    def flat(self) -> Tensor:
        """``(G, P)``: each member's parameters flattened in ``model.parameters()`` order."""
        if len(self.members) == 1:
            return torch.cat([self.params[name].reshape(-1) for name in self.model_names])[None]
        return torch.cat([self.params[name].flatten(1) for name in self.model_names], dim=1)

    def tensors(self, name: str) -> list[Tensor]:
        """Parameter ``name`` of each member, as the rule sees it."""
        p = self.params[name]
        return [p] if len(self.members) == 1 else list(p.unbind())


def unroll_many(
    inners: Sequence[InnerState], rule: LearnedRule, steps: int, *, first_order: bool = False
) -> list[Trajectory]:
    """Run ``steps`` differentiable steps of every optimizee of ``inners`` together; one trajectory each, in order.

    Args:
        inners: the meta-batch (modified: each ends ``steps`` further, as :func:`~metaopt.inner.unroll.unroll` leaves
            it); their optimizers must use ``rule``.
        rule: the live rule; :attr:`~metaopt.rules.LearnedRule.separable` (else a ``ValueError``).
        steps: T.
        first_order: feed the rule detached gradients.
    """
    if not rule.separable_by_model:
        raise ValueError(f"rule {type(rule).__name__} couples tensors in its step; unroll the optimizees one by one")
    groups = _groups(inners)
    slots = [(g, name, k) for g, group in enumerate(groups) for name in group.names for k in range(len(group.members))]
    # which optimizee each of the rule's tensors belongs to, for a rule that couples one model's tensors
    models = torch.tensor([groups[g].members[k] for g, _, k in slots], device=rule.device)
    state = rule.join([_piece(inners, groups, slot, rule) for slot in slots])
    losses: list[list[Tensor]] = [[] for _ in groups]
    valid: list[list[Tensor]] = [[] for _ in groups]
    iterates = [[group.flat()] for group in groups]
    for _ in range(steps):
        step_losses = [group.loss(group.params, [inners[i].take_batch() for i in group.members]) for group in groups]
        for g, loss in enumerate(step_losses):
            losses[g].append(loss)
        state = _step(groups, rule, torch.cat(step_losses).sum(), state, first_order, models)
        for g, group in enumerate(groups):
            iterates[g].append(group.flat())
            if inners[group.members[0]].valid_batches is not None:
                valid[g].append(group.loss(group.params, [_next_valid(inners[i]) for i in group.members]))
    for g, group in enumerate(groups):
        for i in group.members:
            inners[i].next_batch = next(inners[i].batches)
        losses[g].append(group.loss(group.params, [inners[i].next_batch for i in group.members]))  # type: ignore[misc]
    _carry(inners, groups, slots, rule.split(state, [p for group in groups for name in group.names
                                                      for p in group.tensors(name)]))  # fmt: skip
    trajectories: list[Trajectory | None] = [None] * len(inners)
    for g, group in enumerate(groups):
        curves, paths = torch.stack(losses[g], dim=1), torch.stack(iterates[g], dim=1)  # (G, T + 1), (G, T + 1, P)
        held = torch.stack(valid[g], dim=1) if valid[g] else None
        for k, i in enumerate(group.members):
            inner = inners[i]
            trajectories[i] = Trajectory(
                curves[k], paths[k], inner.step, inner.context, None if held is None else held[k]
            )
            inner.step += steps
    return [t for t in trajectories if t is not None]


def advance_many(inners: Sequence[InnerState], rule: LearnedRule, steps: Sequence[int]) -> None:
    """:func:`~metaopt.inner.unroll.advance` of every optimizee by its own number of plain steps, together.

    The start offsets of a meta-batch: no meta-graph, one gradient call and one rule call (under ``no_grad``) per
    step for all the optimizees that still have steps to take, same-shape ones evaluated stacked. Optimizees drop out
    as their counts run out (the batch is regrouped, so it runs in as many phases as there are distinct counts). Each
    ends where ``advance`` leaves it, to rounding: ``steps[i]`` steps further, its next batch drawn, its rule state in
    its optimizer; an optimizee whose loss is non-finite stops there (no next batch drawn, as ``fit`` stops); one whose
    update has a non-finite entry keeps its parameters and rule state and counts a skipped step (the drop-in step's
    guard). On such a step every optimizee is stepped by a rule call of its own, so nothing non-finite reaches the
    others' step through the rule's per-model sums.

    Args:
        inners: the optimizees (modified); their optimizers must use ``rule`` and hold every parameter of their model,
            and every parameter must get a gradient (autograd raises otherwise), as for :func:`unroll_many`.
        rule: the live rule; :attr:`~metaopt.rules.LearnedRule.separable_by_model` (else a ``ValueError``).
        steps: the number of plain steps of each optimizee (0: left as it is).
    """
    if not rule.separable_by_model:
        raise ValueError(f"rule {type(rule).__name__} couples tensors in its step; advance the optimizees one by one")
    if len(steps) != len(inners) or any(n < 0 for n in steps):
        raise ValueError(f"advance_many needs one count >= 0 per optimizee, got {list(steps)} for {len(inners)}")
    remaining = list(steps)
    while True:
        active = [i for i, n in enumerate(remaining) if n > 0]
        if not active:
            return
        count = min(remaining[i] for i in active)
        taken, stopped = _advance_phase([inners[i] for i in active], rule, count)
        for k, i in enumerate(active):
            remaining[i] = 0 if k in stopped else remaining[i] - taken
            if remaining[i] == 0 and k not in stopped:
                inners[i].next_batch = next(inners[i].batches)


def _advance_phase(inners: Sequence[InnerState], rule: LearnedRule, steps: int) -> tuple[int, set[int]]:
    """Up to ``steps`` plain steps of every optimizee of ``inners``, together; ``(steps taken, stopped members)``.

    The phase ends early after a step at which some optimizee's loss was non-finite: those are the stopped ones (left
    at that step, not counted); the others took the step.
    """
    groups = _groups(inners)
    slots = [(g, name, k) for g, group in enumerate(groups) for name in group.names for k in range(len(group.members))]
    models = torch.tensor([groups[g].members[k] for g, _, k in slots], device=rule.device)
    state = rule.join([detach_state(_piece(inners, groups, slot, rule)) for slot in slots])
    stopped: set[int] = set()
    taken = 0
    while taken < steps and not stopped:
        losses = [group.loss(group.params, [inners[i].take_batch() for i in group.members]) for group in groups]
        members = [i for group in groups for i in group.members]
        stopped = {i for i, ok in zip(members, torch.isfinite(torch.cat(losses).detach()).tolist()) if not ok}
        state = _plain_step(inners, groups, slots, rule, losses, state, models, stopped)
        for i in set(range(len(inners))) - stopped:
            inners[i].step += 1
        taken += 1
    _carry(inners, groups, slots, rule.split(state, [p for group in groups for name in group.names
                                                      for p in group.tensors(name)]))  # fmt: skip
    return taken, stopped


def _plain_step(
    inners: Sequence[InnerState],
    groups: list[_Group],
    slots: list[tuple[int, str, int]],
    rule: LearnedRule,
    losses: list[Tensor],
    state: RuleState,
    models: Tensor,
    stopped: set[int],
) -> RuleState:
    """One drop-in step of every optimizee but the ``stopped`` ones (non-finite loss); the groups' parameters replaced.

    One rule call for all. If its update has a non-finite entry, or some optimizee is stopped, each optimizee is
    stepped by a call of its own from its own state; one whose update is not finite then keeps its parameters and
    state and counts a skipped step, as do (without the count) the stopped ones.
    """
    names = [(group, name) for group in groups for name in group.names]
    params = [group.params[name] for group, name in names]
    # each optimizee's gradient is its own loss's (a stopped one's, never used, may be NaN)
    grads = torch.autograd.grad(torch.cat(losses).sum(), params)
    per_tensor = [p.detach() for group, name in names for p in group.tensors(name)]
    frozen: set[int] = set()
    with torch.no_grad():
        flat = torch.cat([g.reshape(-1) for g in grads]).to(rule.dtype)
        # with a stopped optimizee the step goes member by member: its gradient never reaches the others' sums
        update, new_state = (flat, state) if stopped else rule.step_models(flat, state, per_tensor, models)
        if stopped or not finite(update):
            update, new_state, frozen = _member_by_member(groups, slots, rule, flat, per_tensor, state, stopped)
            for i in frozen - stopped:
                inners[i].optimizer.skipped_steps += 1
        for (group, name), p, delta in zip(names, params, update.split([p.numel() for p in params])):
            old = p.detach()
            new = moved(old, delta, *group.options[name])
            kept = [k for k, i in enumerate(group.members) if i in frozen]
            if kept and len(group.members) == 1:
                new = old
            elif kept:
                new[kept] = old[kept]
            group.params[name] = new.requires_grad_()
    return new_state


def _member_by_member(
    groups: list[_Group],
    slots: list[tuple[int, str, int]],
    rule: LearnedRule,
    flat: Tensor,
    per_tensor: list[Tensor],
    state: RuleState,
    stopped: set[int],
) -> tuple[Tensor, RuleState, set[int]]:
    """The step of each optimizee by a rule call of its own: ``(update, state, frozen optimizees)``.

    A frozen optimizee (stopped, or its update not finite) gets a zero update and keeps its state pieces.
    """
    owner = [groups[g].members[k] for g, _, k in slots]
    sizes = [p.numel() for p in per_tensor]
    pieces = rule.split(state, per_tensor)
    grads = list(flat.split(sizes))
    updates = [torch.zeros_like(g) for g in grads]
    frozen = set(stopped)
    for member in dict.fromkeys(owner):
        if member in stopped:
            continue
        mine = [j for j, i in enumerate(owner) if i == member]
        tensors = [per_tensor[j] for j in mine]
        state_of_member = rule.join([pieces[j] for j in mine])
        update, new_state = rule.step(torch.cat([grads[j] for j in mine]), state_of_member, tensors)
        if not finite(update):
            frozen.add(member)
            continue
        for j, delta, piece in zip(mine, update.split([sizes[j] for j in mine]), rule.split(new_state, tensors)):
            updates[j], pieces[j] = delta, piece
    return torch.cat(updates), rule.join(pieces), frozen


def _step(
    groups: list[_Group], rule: LearnedRule, total: Tensor, state: object, first_order: bool, models: Tensor
) -> object:
    """One step of every optimizee from the sum of their losses; the groups' parameters replaced; the new state.

    ``models``: the optimizee of each of the rule's tensors (a separable rule's ``step_models`` is its ``step``).
    """
    names = [(group, name) for group in groups for name in group.names]
    params = [group.params[name] for group, name in names]
    # first order: gradients without a graph of their own, what the twin's detached ones are (and cheaper to take)
    grads = torch.autograd.grad(total, params, create_graph=not first_order, retain_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads]).to(rule.dtype)
    per_tensor = [p for group, name in names for p in group.tensors(name)]
    update, new_state = rule.step_models(flat, state, per_tensor, models)
    for (group, name), p, delta in zip(names, params, update.split([p.numel() for p in params])):
        group.params[name] = moved(p, delta, *group.options[name])
    return new_state


def moved(p: Tensor, delta: Tensor, lr: float, weight_decay: float) -> Tensor:
    """``p (1 - lr wd) + lr delta``: the optimizer shells' move of a parameter (``delta`` shaped and cast to it)."""
    if weight_decay:
        p = p * (1 - lr * weight_decay)
    delta = delta.view_as(p).to(p.dtype)
    return p + (delta if lr == 1 else lr * delta)


def _groups(inners: Sequence[InnerState]) -> list[_Group]:
    """The meta-batch's optimizees grouped by :func:`stack_key`, in order of first appearance."""
    keys: dict[tuple, list[int]] = {}
    for i, inner in enumerate(inners):
        keys.setdefault(stack_key(inner), []).append(i)
    groups = []
    for members in keys.values():
        first = inners[members[0]]
        by_param = {p: name for name, p in first.model.named_parameters()}
        names = [by_param[p] for group in first.optimizer.param_groups for p in group["params"]]
        options = {by_param[p]: (float(group["lr"]), float(group["weight_decay"]))
                   for group in first.optimizer.param_groups for p in group["params"]}  # fmt: skip
        found = [dict(inners[i].model.named_parameters()) for i in members]
        if len(members) == 1:  # a copy: the model's own parameters are overwritten at the end
            params = {name: found[0][name].detach().clone().requires_grad_() for name in names}
        else:
            params = {name: torch.stack([f[name].detach() for f in found]).requires_grad_() for name in names}
        groups.append(_Group(members, names, list(found[0]), params, options,
                             _loss_function(first.task, first.model, len(members))))  # fmt: skip
    return groups


def _loss_function(task: Task, model: nn.Module, count: int) -> Callable[[dict[str, Tensor], list[Batch]], Tensor]:
    """``(stacked params, batches) -> (G,)`` losses of the ``count`` members of a group, vmapped where it can be."""
    one = _TaskLoss(task, model)
    if count == 1:

        def single(params: dict[str, Tensor], batches: list[Batch]) -> Tensor:
            return one(params, *batches[0])[None]

        return single
    if any(True for _ in model.buffers()):  # buffers would be shared by the members under vmap

        def looped(params: dict[str, Tensor], batches: list[Batch]) -> Tensor:
            return torch.stack([one({k: v[m] for k, v in params.items()}, *batch) for m, batch in enumerate(batches)])

        return looped
    batched = vmap(one)

    def stacked(params: dict[str, Tensor], batches: list[Batch]) -> Tensor:
        inputs, targets = (torch.stack(parts) for parts in zip(*batches))
        return batched(params, inputs, targets)

    return stacked


class _TaskLoss:
    """``task.loss`` of ``model`` with its parameters swapped for given tensors: ``functional_call``, made cheaper.

    The tensors are put in the modules' parameter dicts for the call and the parameters put back after it (what
    ``torch.func.functional_call`` does, without walking the module tree at every call); a model with tied
    parameters goes through ``functional_call``.
    """

    def __init__(self, task: Task, model: nn.Module):
        self.task, self.model = task, model
        self.tied = len(list(model.named_parameters(remove_duplicate=False))) != len(list(model.parameters()))
        self.slots = {}
        for name, _ in model.named_parameters():
            prefix, _, attr = name.rpartition(".")
            self.slots[name] = (model.get_submodule(prefix), attr)

    def __call__(self, params: dict[str, Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
        if self.tied:
            return functional_call(TaskLossModule(self.task, self.model), {f"model.{k}": v for k, v in params.items()},
                                   (inputs, targets))  # fmt: skip
        saved = []
        try:
            for name, value in params.items():
                module, attr = self.slots[name]
                saved.append((module, attr, module._parameters[attr]))
                module._parameters[attr] = value  # type: ignore[assignment]
            return self.task.loss(self.model, (inputs, targets))
        finally:
            for module, attr, original in saved:
                module._parameters[attr] = original


class TaskLossModule(nn.Module):
    """``task.loss(model, batch)`` as a module's forward, so ``functional_call`` can swap the model's parameters.

    (A task may score more than ``criterion(model(x), y)``.) Used here for models with tied parameters, and by the
    vectorised ES population.
    """

    def __init__(self, task: Task, model: nn.Module):
        super().__init__()
        self.task = task
        self.model = model

    def forward(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """The task's loss on ``(inputs, targets)``."""
        return self.task.loss(self.model, (inputs, targets))


def _piece(
    inners: Sequence[InnerState], groups: list[_Group], slot: tuple[int, str, int], rule: LearnedRule
) -> ParamState:
    """The rule state a slot (group, parameter name, member) starts from: its optimizer's, or a fresh one."""
    g, name, k = slot
    inner = inners[groups[g].members[k]]
    param = dict(inner.model.named_parameters())[name]
    return inner.optimizer.state[param] or rule.init_state(param)


def _carry(inners: Sequence[InnerState], groups: list[_Group], slots: list[tuple[int, str, int]],
           pieces: list[ParamState]) -> None:  # fmt: skip
    """Write the groups' parameters and the rule state, detached, back into the optimizees."""
    with torch.no_grad():
        for group in groups:
            for k, i in enumerate(group.members):
                for name, p in inners[i].model.named_parameters():
                    p.copy_(group.tensors(name)[k])
    for (g, name, k), piece in zip(slots, pieces):
        inner = inners[groups[g].members[k]]
        param = dict(inner.model.named_parameters())[name]
        inner.optimizer.state[param].update(detach_state(piece))


def _next_valid(inner: InnerState) -> Batch:
    assert inner.valid_batches is not None
    return next(inner.valid_batches)
