"""The ``tiny`` rule's drop-in step done in place: moments, update and parameters written where they live.

The rule's :meth:`~metaopt.rules.tiny.TinyRule.step` is functional, the form meta-training differentiates: it joins
every gradient into one flat vector, builds new moment tensors, gathers the learned and AdamW coordinates, and
returns one flat update that the optimizer shell adds back. Under ``no_grad`` (``LearnedOptimizer.step``) this module
computes the same maths tensor by tensor on the parameters' own storage, in three passes over each tensor:

1. the new moments (``lerp`` of the stored ones towards the gradient) and the tensor's means of the bias-corrected
   second moment and of the squared parameter (the per-tensor reductions the inputs need);
2. the per-coordinate MLP's direction (or AdamW's update on AdamW's tensors; with ``orthogonalize``, each learned
   matrix's direction through Newton-Schulz, whole or in groups of ``ns_block`` rows) and its root mean square, which
   gives the tensor's step scale;
3. only when every tensor's update is finite (the shell's guard: a non-finite step changes nothing), the moments are
   written into the rule's joined state through views and the scaled direction is added to the parameter (with the
   ``adapt_rate`` and ``weight_decay`` options, their factors and state are applied first, in a few eager passes).

No pass concatenates, splits or gathers the whole state, and the state keeps the rule's joined ``(K, N)`` layout, so
checkpoints, ``state_dict()`` and the differentiable path see no difference. The direction's MLP runs in one of two
ways, the same maths either way:

* eager: cache-sized blocks of coordinates, each layer one ``mm`` with its bias folded in as a last column against a
  row of ones (the tensor's progress bias folded the same way), so the activations stay in the cache;
* compiled (the optimizer's ``compile=True``): the whole step is one pure function of the gradients, parameters,
  state and rule weights, compiled once per list of parameter shapes with ``torch.compile`` (inductor), in which the
  MLP is written out unit by unit as elementwise arithmetic with the weights as 0-d tensors, so the compiler fuses a
  tensor's passes into a few vectorised loops (the fused learned-optimizer kernels of PyLO, Janson et al. 2025, here
  generated from the rule's own maths rather than written by hand). Where compilation fails (no C++ compiler) it
  warns once and the eager path runs.

Parameters or gradients that are not contiguous or not in the state's dtype are left to the functional step, and so
are, on the eager path, models whose tensors are small on average (where its per-tensor operations cost more).
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from envs.training.muon import matrix_mask, orthogonalize
from metaopt.rules.base import warn_compile_unavailable
from metaopt.rules.scheduler import scheduler_features

if TYPE_CHECKING:
    from metaopt.rules.tiny import TinyRule

__all__ = ["in_place_step", "mup_factor"]

_TINY = 1e-30
"""The rule's floor of the divisions by a second moment or a root mean square (:data:`metaopt.rules.tiny._TINY`)."""
BLOCK = 16384
"""Coordinates per block of the eager direction: its activations, (hidden + 1) * BLOCK floats a layer, stay in cache."""


EAGER_LEAST_PER_TENSOR = 6144
"""Least mean coordinates per tensor for the eager in-place step: below it its per-tensor operations cost more than
the functional step's whole-vector ones (the compiled step is taken at any size). Measured on one CPU thread, the two
cost the same at about 5,000-6,700 coordinates per tensor on 3-layer MLPs (6 tensors) and below 4,000 on 4-block
transformers (53 tensors), where the in-place step is 1.5-2x faster at 5,600 and 2.4-5x at 15,500."""


@dataclass(frozen=True)
class Plan:
    """What a step over one list of parameter shapes needs that does not change between steps (hashable).

    Built from the rule's options and the shapes; the compiled step is cached per plan.
    """

    sizes: tuple[int, ...]
    """Coordinates of each tensor."""
    offsets: tuple[int, ...]
    """Where each tensor starts in the joined state's coordinates."""
    learned: tuple[bool, ...]
    """Whether the learned rule drives each tensor (else AdamW)."""
    mup: tuple[float, ...]
    """Each tensor's muP factor (1 for AdamW's tensors)."""
    momentum_complements: tuple[float, ...]
    """1 - decay of each stored momentum (the MLP's, then AdamW's beta1 where it is not one of them)."""
    second_complements: tuple[float, ...]
    """1 - decay of each stored second moment."""
    mlp_momenta: int
    """How many of the momenta the MLP reads (the first ones)."""
    adamw_momentum: int
    """Row of AdamW's momentum among the momenta."""
    adamw_second: int
    """Row of AdamW's second moment among the second moments."""
    num_layers: int
    param_feature: bool
    param_scale: bool
    param_floor: float
    eps: float
    step_size: float
    adamw_lr: float
    adamw_eps: float
    adamw_weight_decay: float
    matrices: tuple[tuple[int, int] | None, ...] = ()
    """With ``orthogonalize``: each learned matrix's shape as ``rows x the rest`` (its direction is orthogonalized),
    None for the other tensors; empty without it."""
    ns_steps: int = 5
    ns_block: int = 0
    ns_dtype: torch.dtype | None = None
    ns_method: str = "auto"


NS_DTYPES = ("rule", "bfloat16")
"""Values of the tiny rule's ``ns_dtype``: the dtype of its Newton-Schulz iterations."""


def ns_dtype(name: str) -> torch.dtype | None:
    """The dtype the Newton-Schulz iterations run in for the option ``ns_dtype`` (None: the rule's own)."""
    return None if name == "rule" else getattr(torch, name)


def mup_factor(base_fan_in: int, fan_in: int, cap: bool) -> float:
    """The muP factor of a matrix's step, ``base_fan_in / fan_in``; with ``cap`` at most 1."""
    factor = base_fan_in / fan_in
    return min(factor, 1.0) if cap else factor


def make_plan(rule: TinyRule, shapes: Sequence[tuple[int, ...]]) -> Plan:
    """The plan of a step of ``rule`` (a ``TinyRule``) over parameters of ``shapes``."""
    from metaopt.rules.tiny import learned_tensor_mask  # tiny imports this module

    cfg = rule.config
    sizes = tuple(math.prod(shape) for shape in shapes)
    learned = tuple(learned_tensor_mask(shapes, cfg.learned_tensors))
    mup = tuple(
        mup_factor(cfg.base_fan_in, math.prod(shape[1:]), cfg.mup_cap)
        if cfg.mup and chosen and len(shape) >= 2
        else 1.0
        for shape, chosen in zip(shapes, learned)
    )
    momentum_decays, second_decays = rule._momentum_decays, rule._second_decays
    hybrid = cfg.learned_tensors != "all"
    ortho = matrix_mask(shapes, cfg.ns_matrices)
    matrices = tuple(
        (shape[0], size // shape[0]) if chosen and ortho_i and size else None
        for shape, size, chosen, ortho_i in zip(shapes, sizes, learned, ortho)
    )
    return Plan(
        sizes=sizes,
        offsets=tuple(sum(sizes[:i]) for i in range(len(sizes))),
        learned=learned,
        mup=mup,
        momentum_complements=tuple(1 - b for b in momentum_decays),
        second_complements=tuple(1 - b for b in second_decays),
        mlp_momenta=len(cfg.momentum_decays),
        adamw_momentum=momentum_decays.index(cfg.adamw_betas[0]) if hybrid else 0,
        adamw_second=second_decays.index(cfg.adamw_betas[1]) if hybrid else 0,
        num_layers=cfg.num_layers,
        param_feature=cfg.param_feature,
        param_scale=cfg.param_scale,
        param_floor=cfg.param_floor,
        eps=cfg.eps,
        step_size=cfg.step_size,
        adamw_lr=cfg.adamw_lr,
        adamw_eps=cfg.adamw_eps,
        adamw_weight_decay=cfg.adamw_weight_decay,
        matrices=matrices if cfg.orthogonalize else (),
        ns_steps=cfg.ns_steps,
        ns_block=cfg.ns_block,
        ns_dtype=ns_dtype(cfg.ns_dtype),
        ns_method=cfg.ns_method,
    )


def in_place_step(
    rule: TinyRule,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    state: dict[str, Tensor],
    options: Sequence[tuple[float, float]],
    compile: bool = False,
) -> bool | None:
    """One drop-in step of ``rule`` (a ``TinyRule``) written into ``params`` and ``state``.

    Args:
        rule: the tiny rule (its weights in the state's dtype).
        params: the parameters with a gradient, in step order.
        grads: their gradients.
        state: the rule's joined state of ``params`` (from ``rule.join``), updated in place.
        options: ``(lr, weight_decay)`` of each parameter's group: ``p <- p (1 - lr wd) + lr update``.
        compile: run the compiled step (falls back to the eager one, warning once, where compilation fails).

    Returns:
        True when the step was applied, False when an update was not finite (nothing changed), None when these
        inputs go to the functional step (a parameter or gradient is not contiguous or not in the state's dtype,
        autograd is on, or, eager, the tensors average under :data:`EAGER_LEAST_PER_TENSOR` coordinates or live on
        an accelerator): nothing was done.
    """
    dtype = state["momenta"].dtype
    if not compile and sum(p.numel() for p in params) < EAGER_LEAST_PER_TENSOR * len(params):
        return None  # small tensors: the functional step's few whole-vector operations cost less
    if not compile and params[0].device.type != "cpu":
        return None  # on an accelerator the eager blocks are thousands of small launches; whole vectors cost less
    if not all(
        p.dtype == dtype and g.dtype == dtype and p.is_contiguous() and g.is_contiguous() and g.shape == p.shape
        for p, g in zip(params, grads)
    ):
        return None
    device = params[0].device
    key = (tuple(tuple(p.shape) for p in params), dtype, device)
    cache = rule.__dict__.setdefault("_in_place_plans", {})
    found = cache.get(key)
    if found is None:
        cfg = rule.config
        bases = torch.tensor(rule._momentum_decays + rule._second_decays, dtype=dtype, device=device)[:, None]
        inv_scales = 1 / torch.tensor(cfg.time_scales, dtype=dtype, device=device)[:, None]
        # the lerp weights as the functional step makes them: 1 - decay in the state's dtype, one row per moment
        complements = [1 - torch.tensor(d, dtype=dtype, device=device)[:, None]
                       for d in (rule._momentum_decays, rule._second_decays)]  # fmt: skip
        found = cache[key] = (make_plan(rule, key[0]), bases, inv_scales, complements)
    plan, bases, inv_scales, complements = found
    weights = _weights(rule, plan)
    # the per-tensor factors, computed here: inside a compiled loop they would be recomputed at every coordinate
    steps = state["steps"]
    new_steps = steps + 1
    corrections = torch.reciprocal(1 - torch.pow(bases, new_steps))  # (K + J, T): 1 / (1 - b^t)
    biases = torch.addmm(rule.b_in[:, None], rule.w_time, torch.tanh(new_steps[None] * inv_scales))  # (H, T)
    cfg = rule.config
    multiplier = torch.ones((), dtype=dtype, device=device)
    first = None
    if rule.schedule is not None:  # the global scheduler's factor, from each tensor's mean squared gradient
        mean_square = torch.stack([(g * g).mean() for g in grads])
        first = torch.where(new_steps == 1, mean_square, state["first_square"])
        multiplier = rule.schedule(scheduler_features(new_steps, inv_scales, mean_square, first))
    factors = torch.stack([cfg.step_size * rule.log_step.exp(), cfg.adamw_lr * rule.adamw_log_scale.exp(), multiplier])
    reads = (list(grads), list(params), state["momenta"], state["second"])
    momentum_weights, second_weights = complements
    kernel = _compiled(plan) if compile else None
    if kernel is not None:
        try:
            found, scales, applied = kernel(
                *reads, momentum_weights, second_weights, weights, corrections, biases, factors
            )
        except Exception as error:  # noqa: BLE001 -- any compiler failure: the eager step, said once
            _FAILED.add(plan)
            warn_compile_unavailable("tiny", error, _WARNED, stacklevel=2)
            kernel = None
    if kernel is None:
        found, scales, applied = directions(
            plan, False, *reads, momentum_weights, second_weights, weights, corrections, biases, factors
        )
    if not applied:
        return False
    moves = [lr * scale for (lr, _), scale in zip(options, scales.tolist())]
    keeps = [1 - lr * decay for lr, decay in options]
    if cfg.adapt_rate or cfg.weight_decay:
        _adapt_and_decay(rule, plan, list(grads), list(params), state, found, scales, options, moves, keeps)
    lerp_weights = (momentum_weights.flatten().tolist(), second_weights.flatten().tolist())
    commit(plan, *reads, lerp_weights, found, moves, keeps)
    steps.copy_(new_steps)
    if first is not None:
        state["first_square"].copy_(first)
    return True


def _adapt_and_decay(
    rule: TinyRule,
    plan: Plan,
    grads: list[Tensor],
    params: list[Tensor],
    state: dict[str, Tensor],
    found: list[Tensor],
    scales: Tensor,
    options: Sequence[tuple[float, float]],
    moves: list[float],
    keeps: list[float],
) -> None:
    """The step-size adaptation and the learned tensors' weight decay, in eager passes once the guard passed.

    Each learned tensor's update is ``factor * (scale * direction - weight_decay * size * p)`` (the functional step's),
    with ``size`` its step size (``scale`` times the direction's root mean square) and ``factor`` its adapted step
    factor: ``moves`` and ``keeps`` are adjusted to it, and the adaptation's state (each tensor's log factor, the last
    update, from the parameters before they move) is written.
    """
    cfg = rule.config
    spans = [(start, start + size) for start, size in zip(plan.offsets, plan.sizes)]
    chosen = [t for t in range(len(spans)) if plan.learned[t] and plan.sizes[t]]
    factors = [1.0] * len(spans)
    if cfg.adapt_rate and chosen:  # as TinyRule._adapt: the cosine of the gradient with the last update, per tensor
        last, log_adapt = state["last"], state["log_adapt"]
        sums = torch.stack(
            [
                torch.stack([torch.dot(g, u), torch.dot(g, g), torch.dot(u, u)]) / plan.sizes[t]
                for t in chosen
                for g, u in [(grads[t].view(-1), last[spans[t][0] : spans[t][1]])]
            ]
        )
        cosine = sums[:, 0] * torch.rsqrt(sums[:, 1] * sums[:, 2] + _TINY)
        index = torch.tensor(chosen, device=log_adapt.device)
        limit = math.log(cfg.adapt_limit)
        updated = (log_adapt[index] - cfg.adapt_rate * cosine).clamp(-limit, limit)
        log_adapt[index] = updated
        for t, factor in zip(chosen, updated.exp().tolist()):
            factors[t] = factor
    scale_list = scales.tolist()
    for t, (start, stop) in enumerate(spans):
        direction, flat = found[t], params[t].view(-1)
        lr = options[t][0]
        decay = 0.0
        if plan.learned[t] and cfg.weight_decay and plan.sizes[t]:
            size = scale_list[t] * math.sqrt(float(torch.dot(direction, direction)) / plan.sizes[t] + _TINY)
            decay = cfg.weight_decay * size * factors[t] / (1.0 if cfg.weight_decay_mup else plan.mup[t])
        if cfg.adapt_rate:  # the update the functional step returns, from the parameters before they move
            last_t = torch.mul(direction, scale_list[t] * factors[t], out=state["last"][start:stop])
            if decay:
                last_t.add_(flat, alpha=-decay)
        moves[t] *= factors[t]
        keeps[t] -= lr * decay


def _weights(rule: TinyRule, plan: Plan) -> list[Tensor]:
    """The rule's weights the step reads, in a fixed order (live tensors: no copies, no caching)."""
    names = ["w_in"]
    for layer in range(1, plan.num_layers):
        names += [f"w_{layer}", f"b_{layer}"]
    names += ["w_out", "w_skip"]
    return [getattr(rule, name) for name in names]


def directions(
    plan: Plan,
    traced: bool,
    grads: list[Tensor],
    params: list[Tensor],
    momenta: Tensor,
    second: Tensor,
    momentum_complements: Tensor,
    second_complements: Tensor,
    weights: list[Tensor],
    corrections: Tensor,
    biases: Tensor,
    factors: Tensor,
) -> tuple[list[Tensor], Tensor, Tensor]:
    """Passes 1 and 2 (see the module docstring): each tensor's direction and scale, and the guard. Writes nothing.

    Args:
        plan: the step's constants.
        traced: the compiled form (the MLP written out unit by unit) or the eager one (the MLP in blocks).
        grads: the gradients, in step order.
        params: the parameters, in step order.
        momenta: ``(K, N)``: the joined state's momenta.
        second: ``(J, N)``: its second moments.
        momentum_complements: ``(K, 1)``: ``1 - decay`` of each momentum.
        second_complements: ``(J, 1)``: ``1 - decay`` of each second moment.
        weights: ``w_in``, each further layer's weight and bias, ``w_out``, ``w_skip``.
        corrections: ``(K + J, T)``: each moment's bias correction ``1 / (1 - b^t)`` per tensor, at the new step.
        biases: ``(H, T)``: the first layer's bias per tensor (its progress features folded in).
        factors: ``(3,)``: the learned step size, AdamW's learning rate, the global scheduler's factor.

    Returns:
        ``(directions, scales (T,), applied)``: tensor ``t``'s update is ``directions[t] * scales[t]``; ``applied``
        (0-d bool) says whether every update is finite.
    """
    w_in = weights[0]
    layers = [(weights[1 + 2 * i], weights[2 + 2 * i]) for i in range(plan.num_layers - 1)]
    w_out, w_skip = weights[-2:]
    num_momenta = len(plan.momentum_complements)
    learned_step, adamw_lr = factors[0] * factors[2], factors[1] * factors[2]
    found: list[Tensor] = []
    scales: list[Tensor] = []
    for t, (grad, param) in enumerate(zip(grads, params)):
        start, stop = plan.offsets[t], plan.offsets[t] + plan.sizes[t]
        g, p = grad.reshape(-1), param.reshape(-1)
        if plan.sizes[t] == 0:
            found.append(g)
            scales.append(torch.zeros((), dtype=g.dtype, device=g.device))
            continue
        # the new moments, as the functional step's lerp (written only by ``commit``)
        momenta_t = list(torch.lerp(momenta[:, start:stop], g[None], momentum_complements))
        second_t = list(torch.lerp(second[:, start:stop], (g * g)[None], second_complements))
        if plan.learned[t]:
            direction, scale = _learned(plan, traced, t, g, p, momenta_t, second_t, corrections, biases[:, t],
                                        (w_in, layers, w_out, w_skip), learned_step)  # fmt: skip
        else:  # AdamW, as torch.optim.AdamW (and the functional step) computes it
            c1 = corrections[plan.adamw_momentum, t]
            c2 = corrections[num_momenta + plan.adamw_second, t]
            v = second_t[plan.adamw_second]
            direction = -(adamw_lr * c1) * momenta_t[plan.adamw_momentum] / (v.clamp_min(_TINY).sqrt() * c2.sqrt()
                                                                             + plan.adamw_eps)  # fmt: skip
            if plan.adamw_weight_decay:
                direction = direction - (adamw_lr * plan.adamw_weight_decay) * p
            scale = torch.ones((), dtype=g.dtype, device=g.device)
        found.append(direction)
        scales.append(scale)
    # the guard: every update d * scale finite (its largest magnitude is, so no product overflows)
    bounds = torch.stack([d.abs().amax() * s if d.numel() else s for d, s in zip(found, scales)])
    return found, torch.stack(scales), torch.isfinite(bounds).all()


def commit(
    plan: Plan,
    grads: list[Tensor],
    params: list[Tensor],
    momenta: Tensor,
    second: Tensor,
    weights: tuple[list[float], list[float]],
    found: list[Tensor],
    moves: list[float],
    keeps: list[float],
) -> None:
    """Pass 3, once the guard passed: the moments and parameters written in place (the counters by the caller).

    Eager ``foreach`` operations on views of the joined state (in a compiled graph, writes into slices of one buffer
    become a gather over every segment for each coordinate).

    Args:
        plan: the step's constants.
        grads: the gradients, in step order.
        params: the parameters, written in place: ``p <- p keep + move direction``.
        momenta: ``(K, N)``, written in place.
        second: ``(J, N)``, written in place.
        weights: the lerp weights ``1 - decay`` of the momenta and of the second moments (in the state's dtype).
        found: each tensor's direction (from :func:`directions`).
        moves: each tensor's ``lr`` times its scale.
        keeps: each tensor's ``1 - lr weight_decay``.
    """
    spans = [(start, start + size) for start, size in zip(plan.offsets, plan.sizes)]
    flat_grads = [g.view(-1) for g in grads]
    for r, weight in enumerate(weights[0]):
        torch._foreach_lerp_([momenta[r, a:b] for a, b in spans], flat_grads, weight)
    squares = torch._foreach_mul(flat_grads, flat_grads)
    for r, weight in enumerate(weights[1]):
        torch._foreach_lerp_([second[r, a:b] for a, b in spans], squares, weight)
    for param, direction, move, keep in zip(params, found, moves, keeps):
        flat = param.view(-1)
        if keep != 1:
            flat.mul_(keep)
        flat.add_(direction, alpha=move)


def _learned(
    plan: Plan,
    traced: bool,
    t: int,
    g: Tensor,
    p: Tensor,
    momenta: list[Tensor],
    second: list[Tensor],
    corrections: Tensor,
    bias: Tensor,
    network: tuple[Tensor, list[tuple[Tensor, Tensor]], Tensor, Tensor],
    learned_step: Tensor,
) -> tuple[Tensor, Tensor]:
    """``(direction (n,), scale ())`` of learned tensor ``t``: its update is ``direction * scale``."""
    n = plan.sizes[t]
    num_momenta = len(plan.momentum_complements)
    v_hat = second[0] * corrections[num_momenta, t]
    mean_v = v_hat.sum() / n
    denominator = torch.rsqrt(v_hat + (mean_v * plan.eps + _TINY))
    mean_p = _sum_of_products(p, p, traced) / n if plan.param_feature or plan.param_scale else None
    num_inputs = 1 + plan.mlp_momenta + int(plan.param_feature)
    # eager: the inputs written straight into the rows of one (F + 1, n) buffer, the row of ones last
    features = None if traced else g.new_empty(num_inputs + 1, n)
    rows = [None] * num_inputs if features is None else list(features[:num_inputs])
    inputs = [torch.mul(g, denominator, out=rows[0])]
    for k in range(plan.mlp_momenta):
        value = torch.mul(momenta[k], corrections[k, t], out=rows[1 + k])
        inputs.append(torch.mul(value, denominator, out=rows[1 + k]))
    if plan.param_feature:
        assert mean_p is not None
        inputs.append(torch.mul(p, torch.rsqrt(mean_p + 1e-12), out=rows[-1]))
    if features is None:
        direction = _direction_unrolled(inputs, bias, *network)
    else:
        features[num_inputs].fill_(1.0)
        direction = _direction_blocked(features, bias, *network)
    shape = plan.matrices[t] if plan.matrices else None
    if shape is not None:  # as the functional step: before the normalisation
        direction = orthogonalize(
            direction.view(shape), plan.ns_steps, block=plan.ns_block, dtype=plan.ns_dtype, method=plan.ns_method
        )
        direction = direction.reshape(-1)
    rms = _sum_of_products(direction, direction, traced) / n
    scale = torch.rsqrt(rms + _TINY) * (mean_v > 0).to(rms.dtype) * (plan.mup[t] * learned_step)
    if plan.param_scale:
        assert mean_p is not None
        scale = scale * torch.sqrt(mean_p.clamp_min(plan.param_floor**2))
    return direction, scale


def _sum_of_products(a: Tensor, b: Tensor, traced: bool) -> Tensor:
    """``(a * b).sum()`` of two vectors: one fused loop when compiled, ``torch.dot`` (no temporary) when eager."""
    return (a * b).sum() if traced else torch.dot(a, b)


def _direction_unrolled(
    inputs: list[Tensor], bias: Tensor, w_in: Tensor, layers: list[tuple[Tensor, Tensor]], w_out: Tensor,
    w_skip: Tensor,
) -> Tensor:  # fmt: skip
    """The MLP's direction written out unit by unit: elementwise arithmetic the compiler fuses into one loop."""
    hidden = [_unit(inputs, w_in[j], bias[j]) for j in range(w_in.shape[0])]
    for weight, layer_bias in layers:
        hidden = [_unit(hidden, weight[j], layer_bias[j]) for j in range(weight.shape[0])]
    direction = inputs[0] * w_skip[0, 0]
    for i in range(1, len(inputs)):
        direction = direction + inputs[i] * w_skip[0, i]
    for j, h in enumerate(hidden):
        direction = direction + h * w_out[0, j]
    return direction


def _unit(inputs: list[Tensor], weight: Tensor, bias: Tensor) -> Tensor:
    """``relu(bias + weight . inputs)`` of one hidden unit, coordinatewise."""
    total = inputs[0] * weight[0]
    for i in range(1, len(inputs)):
        total = total + inputs[i] * weight[i]
    return torch.relu(total + bias)


def _direction_blocked(
    features: Tensor, bias: Tensor, w_in: Tensor, layers: list[tuple[Tensor, Tensor]], w_out: Tensor,
    w_skip: Tensor,
) -> Tensor:  # fmt: skip
    """The MLP's direction over blocks of :data:`BLOCK` coordinates, each layer one ``mm`` with its bias folded in.

    ``features``: ``(F + 1, n)``, the inputs and a last row of ones.
    """
    num_inputs, n = features.shape[0] - 1, features.shape[1]
    folded = [torch.cat([w_in, bias[:, None]], dim=1)] + [torch.cat([w, b[:, None]], dim=1) for w, b in layers]
    direction = features.new_empty(n)
    block = min(BLOCK, n)
    buffers = [features.new_empty(w.shape[0] + 1, block) for w in folded]  # (H + 1, block): the row of ones last
    for buffer in buffers:
        buffer[-1].fill_(1.0)
    for start in range(0, n, block):
        stop = min(start + block, n)
        if stop - start < block:  # the last, shorter block: buffers of its width
            block = stop - start
            buffers = [buffer[:, :block].clone() for buffer in buffers]
        source = features[:, start:stop]
        for weight, target in zip(folded, buffers):
            torch.mm(weight, source, out=target[:-1]).relu_()
            source = target
        out = direction[start:stop][None]
        torch.mm(w_skip, features[:num_inputs, start:stop], out=out)
        out.addmm_(w_out, source[:-1])
    return direction


# -- the compiled step ------------------------------------------------------------------------------------------------

_Kernel = Callable[..., tuple[list[Tensor], Tensor, Tensor]]
_COMPILED: dict[Plan, _Kernel] = {}
_FAILED: set[Plan] = set()
_WARNED: list[bool] = []


def _compiled(plan: Plan) -> _Kernel | None:
    """The compiled :func:`directions` of ``plan`` (built on first use); None after a failure to compile it.

    Each plan gets its own copy of the function's code object: ``torch.compile`` keeps its compiled graphs per code
    object, and their number is capped, so sharing one would send later plans back to eager.
    """
    if plan in _FAILED:
        return None
    kernel = _COMPILED.get(plan)
    if kernel is None:
        fresh = types.FunctionType(directions.__code__.replace(), directions.__globals__, directions.__name__)
        body = torch.compile(fresh, fullgraph=True, dynamic=False)
        kernel = _COMPILED[plan] = lambda *arguments: body(plan, True, *arguments)
    return kernel
