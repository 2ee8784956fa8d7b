"""The vectorised ES population: the ``2 K`` particles of one optimizee advanced together, one batched call a step.

What :mod:`metaopt.outer.es` does with ``population=vmap``. Each particle is what the loop population runs as a
:class:`~metaopt.shells.LearnedOptimizer` in :func:`envs.fit.fit`: an optimizee and the rule's state, driven by the
rule with its own weights theta +- eps_i. Here the ``M = 2 K`` particles are stacked tensors instead, every optimizee
parameter ``(M, *shape)`` and every leaf of the rule's joined state ``(M, ...)`` (:class:`StackedParticles`), and
the rule's weights are one ``(M, D)`` matrix; one step of all of them is one ``torch.func.vmap`` call of a function
that takes the optimizee's gradient (``grad_and_value`` of the task's loss over ``functional_call``) and applies the
rule (``functional_call`` of its ``step``) with each particle's weights. The estimator adds the unperturbed optimizee
as one more particle (weights theta) and writes it back afterwards (:func:`carry_particle`); with ``population=stack``
the particles of several optimizees of one task run in one call (:func:`run_stacked_many`).

The step does the arithmetic of ``LearnedOptimizer.step`` on every particle: the group's ``lr`` multiplies the
update, ``weight_decay`` decays the weights decoupled (``p * (1 - lr * wd)``), gradients are cast to the rule's dtype
and updates to the parameters', and a particle whose update has a non-finite entry keeps its parameters and rule
state (the NaN guard). It records what :func:`~metaopt.outer.es.rollout` records, the convention of ``fit``: the loss
of each step before its update, and a particle whose loss is non-finite stops there (frozen, later losses and
held-out losses infinite, iterates repeated). Only the rounding differs (batched kernels against one call per
particle, and the LSTM's gates written out, :class:`_CoordinateLSTMStep`): the meta-losses agree with the loop's to
~1e-7 relative in float32 and ~1e-15 in float64; the estimate, which divides differences of nearly equal losses by
sigma^2, to ~1e-3 relative in float32 (far inside its sampling noise) and ~1e-13 in float64.

Models must be vmappable over their weights: no buffers (running statistics; refused up front) and no data-dependent
Python control flow (vmap raises; the error is re-raised naming the task). Every parameter must receive a gradient
(``LearnedOptimizer`` leaves a parameter without one out of the step; here it would get a zero gradient).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from typing_extensions import override

from envs.task import Batch, Task
from metaopt.inner.stacked import TaskLossModule
from metaopt.inner.unroll import InnerState, Trajectory
from metaopt.rules import CoordinateLSTM, LearnedRule, RuleState, detach_state
from metaopt.rules.features import preprocess
from metaopt.shells import LearnedOptimizer

__all__ = [
    "POPULATIONS",
    "StackedParticles",
    "carry_particle",
    "join_particles",
    "run_stacked",
    "run_stacked_many",
    "split_particles",
    "stack_particles",
]

POPULATIONS = ("loop", "vmap", "stack")
"""How an ES population runs: one particle after another (``loop``), all of one optimizee together (``vmap``), or all
of every optimizee of one stack key (same task, structure and options) together (``stack``)."""


@dataclass
class StackedParticles:
    """``M`` particles of one optimizee as stacked tensors (modified in place by :func:`run_stacked`)."""

    params: dict[str, Tensor]
    """``(M, *shape)`` per parameter name of the optimizee's model."""
    state: RuleState
    """The rule's joined state of all coordinates, every tensor with a leading ``M``."""


def stack_particles(inner: InnerState, rule: LearnedRule, count: int) -> StackedParticles:
    """``count`` copies of the optimizee ``inner`` (its parameters and its optimizer's rule state), stacked.

    The state is read as a copy of the optimizer would hold it after ``load_state_dict`` (what each particle of the
    loop population starts from), joined for ``rule``.
    """
    _check_vmappable(inner)
    loaded = LearnedOptimizer(inner.model.parameters(), rule=rule)  # the loop's particles load the state so
    loaded.load_state_dict(inner.optimizer.state_dict())  # (cast to the parameters' dtype); stacking copies it
    names = _names_in_step_order(inner)
    by_name = dict(inner.model.named_parameters())
    pieces = [loaded.state[by_name[name]] or rule.init_state(by_name[name]) for name in names]
    state = rule.join(pieces)
    return StackedParticles(
        {name: p.detach().expand(count, *p.shape).clone() for name, p in inner.model.named_parameters()},
        _map_state(lambda t: t.detach().expand(count, *t.shape).clone(), state),
    )


def join_particles(parts: Sequence[StackedParticles]) -> StackedParticles:
    """Several stacks of particles of one optimizee's shapes as one stack, in order (a copy)."""
    return StackedParticles(
        {name: torch.cat([part.params[name] for part in parts]) for name in parts[0].params},
        _map_many(torch.cat, [part.state for part in parts]),
    )


def split_particles(joined: StackedParticles, counts: Sequence[int]) -> list[StackedParticles]:
    """Inverse of :func:`join_particles`: ``counts`` particles each, in order (views of ``joined``)."""
    return [
        StackedParticles(
            {name: value.split(list(counts))[k] for name, value in joined.params.items()},
            _map_state(partial(_piece_of, counts=list(counts), k=k), joined.state),
        )
        for k in range(len(counts))
    ]


def carry_particle(inner: InnerState, rule: LearnedRule, particle: StackedParticles) -> None:
    """Write a stack of one particle into the optimizee it shadows: its parameters and its optimizer's rule state."""
    names = _names_in_step_order(inner)
    by_name = dict(inner.model.named_parameters())
    with torch.no_grad():
        for name, p in by_name.items():
            p.copy_(particle.params[name][0])
    state = _map_state(lambda t: t[0], particle.state)
    for name, piece in zip(names, rule.split(state, [by_name[name] for name in names])):
        inner.optimizer.state[by_name[name]].update(detach_state(piece))


def run_stacked(
    inner: InnerState,
    rule: LearnedRule,
    weights: Tensor,
    particles: StackedParticles,
    batches: list[Batch],
    valid: list[Batch] | None = None,
) -> list[Trajectory]:
    """T steps of every particle on ``batches`` (T + 1: the last scores theta_{t+T}), as ``rollout`` would run each.

    Args:
        inner: the optimizee the particles shadow (its task, model structure, optimizer options and context; its
            model is only used as the skeleton of ``functional_call`` and is left as it was).
        rule: a rule of the type and shapes whose weights ``weights`` holds (its own weights are not used).
        weights: ``(M, D)`` the rule's weights of each particle, flattened in ``rule.parameters()`` order.
        particles: the particles' start (modified: on return they hold theta_{t+T} and the rule's new state).
        batches: the T + 1 batches every particle sees.
        valid: T held-out batches, or None.

    Returns:
        One trajectory per particle, what ``rollout`` returns for it (losses padded with inf after a divergence).
    """
    _check_vmappable(inner)
    step, score, stacked_weights = _stacked_functions(inner, rule, weights)
    model_names = [name for name, _ in inner.model.named_parameters()]
    losses, held_out, iterates, alive = _advance(step, score, stacked_weights, particles, batches, valid, model_names)
    return _trajectories(inner, losses, held_out, iterates, alive, len(batches), valid is not None)


def run_stacked_many(
    inners: Sequence[InnerState],
    rule: LearnedRule,
    weights: Sequence[Tensor],
    particles: Sequence[StackedParticles],
    batches: Sequence[list[Batch]],
    valid: Sequence[list[Batch] | None],
) -> list[list[Trajectory]]:
    """:func:`run_stacked` for several optimizees of one stack key, all their particles by one vmapped call a step.

    The optimizees share :func:`~metaopt.inner.stacked.stack_key` (the same task, model structure and options).
    Each optimizee's particles see its own batches (every particle is handed its optimizee's batch), so each gets
    what :func:`run_stacked` gives it alone, to the rounding of batched kernels over more particles. The arguments are
    :func:`run_stacked`'s, one per optimizee; ``particles`` are modified as there.
    """
    if len(inners) == 1:
        return [run_stacked(inners[0], rule, weights[0], particles[0], batches[0], valid[0])]
    first = inners[0]
    _check_vmappable(first)
    counts = [w.shape[0] for w in weights]
    step, score, stacked_weights = _stacked_functions(first, rule, torch.cat(list(weights)), own_data=True)
    joined = join_particles(particles)
    data = [_per_particle(step_batches, counts) for step_batches in zip(*batches)]
    held = None if valid[0] is None else [_per_particle(step_batches, counts) for step_batches in zip(*valid)]
    model_names = [name for name, _ in first.model.named_parameters()]
    losses, held_out, iterates, alive = _advance(step, score, stacked_weights, joined, data, held, model_names)
    for mine, part in zip(particles, split_particles(joined, counts)):
        mine.params, mine.state = part.params, part.state
    trajectories = iter(_trajectories(first, losses, held_out, iterates, alive, len(batches[0]), held is not None))
    return [
        [dataclasses.replace(next(trajectories), start_step=inner.step, context=inner.context) for _ in range(count)]
        for inner, count in zip(inners, counts)
    ]


def _piece_of(t: Tensor, counts: list[int], k: int) -> Tensor:
    """The ``k``-th optimizee's particles of a tensor whose leading dimension holds ``counts`` of each."""
    return t.split(counts)[k]


def _per_particle(batches: Sequence[Batch], counts: Sequence[int]) -> Batch:
    """One batch per optimizee as one batch per particle: ``(inputs, targets)`` with a leading particle dimension."""
    inputs, targets = (
        torch.cat([part.expand(count, *part.shape) for part, count in zip(parts, counts)]) for parts in zip(*batches)
    )
    return inputs, targets


def _stacked_functions(
    inner: InnerState, rule: LearnedRule, weights: Tensor, own_data: bool = False
) -> tuple[Callable[..., Any], Callable[..., Any], dict[str, Tensor]]:
    """The first phase: one particle's step and score, vmapped over the particles, and their stacked rule weights.

    Returns:
        ``(step, score, stacked_weights)``: ``step(weights, params, state, inputs, targets) -> (loss, new params,
        new state, update finite)`` and ``score(params, inputs, targets) -> loss``, both over every particle at once
        (with ``own_data`` each particle gets its own inputs and targets, a leading ``M`` dimension; else one batch
        for all), and the rule's weights of each particle by name (``rule.<name>``, shape ``(M, *shape)``).
    """
    task, model = inner.task, inner.model
    count = weights.shape[0]
    names = _names_in_step_order(inner)
    options = _group_options(inner)
    stepper, scorer = _stepper(rule), TaskLossModule(task, model)
    rule_names = [f"rule.{name}" for name, _ in rule.named_parameters()]
    shapes = [w.shape for w in rule.parameters()]
    pieces = weights.split([shape.numel() for shape in shapes], dim=1)
    stacked_weights = {name: w.view(count, *shape) for name, w, shape in zip(rule_names, pieces, shapes)}
    rule_dtype = rule.dtype
    params = dict(model.named_parameters())
    sizes = [params[name].numel() for name in names]

    def loss_of(params: dict[str, Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
        return functional_call(scorer, {f"model.{k}": v for k, v in params.items()}, (inputs, targets))

    def one_step(
        rule_weights: dict[str, Tensor], params: dict[str, Tensor], state: RuleState, inputs: Tensor, targets: Tensor
    ) -> tuple[Tensor, dict[str, Tensor], RuleState, Tensor]:
        """One particle's step (vmapped over the particles): ``fit``'s loss and gradient, ``LearnedOptimizer.step``."""
        grads, loss = grad_and_value(loss_of)(params, inputs, targets)
        flat = torch.cat([grads[name].reshape(-1) for name in names]).to(rule_dtype)
        update, new_state = functional_call(stepper, rule_weights, (flat, state, [params[name] for name in names]))
        new_params = dict(params)
        for name, delta in zip(names, update.split(sizes)):
            p, (lr, weight_decay) = params[name], options[name]
            if weight_decay:
                p = p * (1 - lr * weight_decay)
            new_params[name] = torch.add(p, delta.view_as(p).to(p.dtype), alpha=lr)
        return loss, new_params, new_state, torch.isfinite(update).all()

    data = 0 if own_data else None
    step = _explained(vmap(one_step, in_dims=(0, 0, 0, data, data)), task, rule)
    score = _explained(vmap(loss_of, in_dims=(0, data, data)), task, rule)
    return step, score, stacked_weights


def _advance(
    step: Callable[..., Any], score: Callable[..., Any], stacked_weights: dict[str, Tensor],
    particles: StackedParticles, batches: list[Batch], valid: list[Batch] | None, model_names: list[str],
) -> tuple[list[Tensor], list[Tensor], list[Tensor], Tensor]:  # fmt: skip
    """The second phase: the particles' steps on ``batches`` (stopping once every particle has diverged).

    Returns:
        ``(losses, held_out, iterates, alive)``: per step run, the training losses ``(M,)`` (inf after a particle
        diverged) with the final score last, the held-out losses, the flat iterates ``(M, P)`` (the start first), and
        which particles are still alive.
    """
    count = next(iter(stacked_weights.values())).shape[0]
    device = next(iter(stacked_weights.values())).device
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=device)
    alive = torch.ones(count, dtype=torch.bool, device=device)
    losses: list[Tensor] = []
    held_out: list[Tensor] = []
    iterates = [_flat(particles.params, model_names)]
    with torch.no_grad():
        for index, (inputs, targets) in enumerate(batches[:-1]):
            loss, new_params, new_state, update_finite = step(stacked_weights, particles.params, particles.state,
                                                              inputs, targets)  # fmt: skip
            loss = loss.to(torch.float64)
            losses.append(torch.where(alive, loss, inf))  # the non-finite loss itself is kept, as fit keeps it
            alive = alive & torch.isfinite(loss)
            moves = alive & update_finite  # the NaN guard of LearnedOptimizer.step, and the stop of fit
            if bool(moves.all()):
                particles.params, particles.state = new_params, new_state
            else:
                particles.params = {k: _where(moves, v, particles.params[k]) for k, v in new_params.items()}
                particles.state = _map_states(partial(_where, moves), new_state, particles.state)
            iterates.append(_flat(particles.params, model_names))
            if valid is not None:
                held_out.append(torch.where(alive, score(particles.params, *valid[index]).to(torch.float64), inf))
            if not bool(alive.any()):
                break
        final = score(particles.params, *batches[-1]).to(torch.float64)
    losses.append(torch.where(alive, final, inf))
    return losses, held_out, iterates, alive


def _trajectories(
    inner: InnerState, losses: list[Tensor], held_out: list[Tensor], iterates: list[Tensor], alive: Tensor,
    batch_count: int, with_valid: bool,
) -> list[Trajectory]:  # fmt: skip
    """The last phase: one trajectory per particle, padded as ``rollout`` pads a run that stopped early."""
    count = alive.shape[0]
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=alive.device)
    final = losses.pop()
    missing = batch_count - 1 - len(losses)  # steps not run because every particle had stopped
    losses = losses + [inf.expand(count)] * missing + [final]
    iterates = iterates + [iterates[-1]] * missing
    curves = torch.stack(losses, dim=1).cpu()  # (M, T + 1)
    paths = torch.stack(iterates, dim=1)  # (M, T + 1, P)
    valid_curves = None
    if with_valid:
        valid_curves = torch.stack(held_out + [inf.expand(count)] * missing, dim=1).cpu()
    return [
        Trajectory(curves[i], paths[i], inner.step, inner.context, None if valid_curves is None else valid_curves[i])
        for i in range(count)
    ]


class _RuleStep(nn.Module):
    """``rule.step`` as a module's forward, so ``functional_call`` can swap in each particle's weights."""

    def __init__(self, rule: LearnedRule):
        super().__init__()
        self.rule = rule

    def forward(self, grads: Tensor, state: RuleState, params: list[Tensor]) -> tuple[Tensor, RuleState]:
        return self.rule.step(grads, state, params)


class _CoordinateLSTMStep(_RuleStep):
    """``CoordinateLSTM.step`` with each ``nn.LSTMCell`` written out: ``aten::lstm_cell`` has no vmap batching rule.

    The gates of ``torch.nn.LSTMCell`` (``W_hh h + b_hh + W_ih x + b_ih``, chunks i, f, g, o, ``c' = f c + i g``,
    ``h' = o tanh(c')``), with the sigmoid taken over all four chunks at once (one contiguous call under vmap is
    faster than three strided ones; the g chunk's is unused). Agrees with ``lstm_cell`` to rounding.
    """

    rule: CoordinateLSTM

    @override
    def forward(self, grads: Tensor, state: RuleState, params: list[Tensor]) -> tuple[Tensor, RuleState]:
        cfg = self.rule.config
        hidden = cfg.hidden_size
        x = preprocess(grads, cfg.features, p=cfg.p, scale=cfg.input_scale)
        new_state: list[Tensor] = []
        for index, module in enumerate(self.rule.cells):
            cell = typing.cast(nn.LSTMCell, module)
            h, c = state[2 * index], state[2 * index + 1]
            gates = torch.addmm(cell.bias_hh, h, cell.weight_hh.t())
            gates = gates.add_(torch.addmm(cell.bias_ih, x, cell.weight_ih.t()))
            i, f, _, o = gates.sigmoid().chunk(4, dim=-1)
            c = (f * c).add_(i * gates[:, 2 * hidden : 3 * hidden].tanh())
            h = o * c.tanh()
            new_state += [h, c]
            x = h
        return self.rule.readout(x).squeeze(-1) * cfg.output_scale, tuple(new_state)


def _stepper(rule: LearnedRule) -> _RuleStep:
    """The module whose forward is ``rule.step``, written so vmap can batch it (exact types: a subclass may differ)."""
    return _CoordinateLSTMStep(rule) if type(rule) is CoordinateLSTM else _RuleStep(rule)


def _check_vmappable(inner: InnerState) -> None:
    buffers = [name for name, _ in inner.model.named_buffers()]
    if buffers:
        raise ValueError(
            f"population=vmap cannot stack task {inner.task.name}'s model: it has buffers ({', '.join(buffers)}), "
            "which vmap would share between particles; use population=loop"
        )


def _explained(fn: Callable[..., Any], task: Task, rule: LearnedRule) -> Callable[..., Any]:
    """``fn``, with a failure of vmap re-raised naming the task, the rule and the way out."""

    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except RuntimeError as error:
            raise RuntimeError(
                f"population=vmap cannot batch task {task.name} with rule {type(rule).__name__} over the particles "
                f"({error}); use population=loop"
            ) from error

    return call


def _names_in_step_order(inner: InnerState) -> list[str]:
    """The model's parameter names in the order ``LearnedOptimizer.step`` concatenates them (group by group)."""
    names = {p: name for name, p in inner.model.named_parameters()}
    return [names[p] for group in inner.optimizer.param_groups for p in group["params"]]


def _group_options(inner: InnerState) -> dict[str, tuple[float, float]]:
    names = {p: name for name, p in inner.model.named_parameters()}
    return {
        names[p]: (float(group["lr"]), float(group["weight_decay"]))
        for group in inner.optimizer.param_groups
        for p in group["params"]
    }


def _flat(params: dict[str, Tensor], names: list[str]) -> Tensor:
    """``(M, P)``: each particle's parameters flattened in ``model.parameters()`` order."""
    return torch.cat([params[name].flatten(1) for name in names], dim=1)


def _where(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """``new`` for the particles where ``mask`` (M,) is set, ``old`` elsewhere."""
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)


def _map_state(fn: Callable[[Tensor], Tensor], state: RuleState) -> RuleState:
    """``fn`` applied to every tensor of a rule state (tuples, lists and dicts kept, as ``detach_state``)."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {key: _map_state(fn, value) for key, value in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(_map_state(fn, value) for value in state)
    return state


def _map_many(fn: Callable[[list[Tensor]], Tensor], states: Sequence[RuleState]) -> RuleState:
    """``fn`` of the matching tensors of several rule states of the same layout (tuples, lists and dicts kept)."""
    first = states[0]
    if isinstance(first, Tensor):
        return fn(list(states))  # type: ignore[arg-type]
    if isinstance(first, dict):
        return {key: _map_many(fn, [state[key] for state in states]) for key in first}  # type: ignore[index]
    if isinstance(first, (tuple, list)):
        return type(first)(_map_many(fn, list(parts)) for parts in zip(*states))  # type: ignore[call-overload]
    return first


def _map_states(fn: Callable[[Tensor, Tensor], Tensor], new: RuleState, old: RuleState) -> RuleState:
    """``fn(new, old)`` for every pair of matching tensors of two rule states of the same layout."""
    if isinstance(new, Tensor):
        return fn(new, old)
    if isinstance(new, dict):
        return {key: _map_states(fn, value, old[key]) for key, value in new.items()}
    if isinstance(new, (tuple, list)):
        return type(new)(_map_states(fn, a, b) for a, b in zip(new, old))
    return new
