"""Alignment of two models before a path finder: weight matching of hidden units (Git Re-Basin, Algorithm 2).

After Ainsworth, Hayase & Srinivasa (2023), "Git Re-Basin: Merging Models modulo Permutation Symmetries".

Permuting the hidden units of a network (the rows of a layer's weight and bias, and the matching input columns of
the next layer) changes its weights but not its function. Two models trained from different seeds may differ mostly
by such a permutation, and a model and its permuted copy lie in different components of a level set (the DSS paper's
Appendix E). ``align(space, a, b, "weight_matching")`` permutes B's hidden units to match A: for each hidden layer
in turn, the permutation P_l maximising sum_i <units_i of A, units_{P_l(i)} of B> (incoming weights and bias,
outgoing weights, with the neighbouring layers' permutations applied to B) is a linear assignment problem
(``scipy.optimize.linear_sum_assignment``); sweeps over the layers repeat until none changes. A permutation is only
replaced by a strictly better one, so A aligned to itself is A, and a permuted copy of A comes back as A bit for bit
(the values are moved, never recomputed). B's outputs are unchanged up to the summation order of the next layer.

Models are read as a chain of ``Linear`` / ``Conv2d`` layers in registration order, joined by elementwise
activations, pooling and flattening (the MLPs and convnets of the tasks); a linear layer after a convolution takes
each channel as a block of ``in_features / channels`` inputs (channel-major flattening). Anything else (an LSTM, an
embedding, a normalisation layer) is refused with the module named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from envs.errors import ConfigError, InvalidValue
from geodesics.space import ParamSpace

__all__ = [
    "ALIGNMENTS",
    "Layer",
    "align",
    "check_alignable",
    "check_alignment",
    "chain_layers",
    "permute_hidden",
    "weight_matching",
]

ALIGNMENTS = ("none", "weight_matching")
"""The values of the ``align`` key of the geodesics commands."""

_ELEMENTWISE = (
    nn.ReLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Softplus, nn.Identity, nn.Dropout,
    nn.MaxPool2d, nn.AvgPool2d, nn.Flatten,
)  # fmt: skip
"""Parameter-free modules that act on each unit (channel) alone, so they commute with a permutation of units."""


@dataclass(frozen=True)
class Layer:
    """One weight layer of the chain."""

    weight: str
    """Name of its weight in the space (``0.weight``, ``features.3.weight``)."""
    bias: str | None
    """Name of its bias, or None."""
    in_block: int
    """Inputs per unit of the previous layer (1, or height * width where a linear layer follows a convolution)."""


def check_alignment(owner: Any, key: str = "align") -> None:
    """Check, in a schema's ``__post_init__``, that ``owner.key`` is one of :data:`ALIGNMENTS`.

    Raises:
        InvalidValue: any other value (``load_config`` names the full key).
    """
    value = getattr(owner, key)
    if value not in ALIGNMENTS:
        raise InvalidValue(type(owner), key, value, f"must be one of {', '.join(ALIGNMENTS)}, got {value!r}")


def chain_layers(model: nn.Module) -> list[Layer]:
    """The weight layers of ``model`` in order, as a chain whose hidden units can be permuted.

    Raises:
        ValueError: a module that is neither a ``Linear`` / ``Conv2d`` layer nor elementwise, or layer widths that
            do not chain.
    """
    layers: list[Layer] = []
    previous_units = 0
    for name, module in model.named_modules():
        if list(module.children()):
            continue
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            if isinstance(module, _ELEMENTWISE) and not list(module.parameters(recurse=False)):
                continue
            raise ValueError(
                f"weight matching aligns chains of Linear/Conv2d layers with elementwise activations and pooling; "
                f"module {name or '(root)'!r} is a {type(module).__name__}. Use align=none for this task."
            )
        inputs = module.in_features if isinstance(module, nn.Linear) else module.in_channels
        block = inputs // previous_units if previous_units else 1
        if previous_units and (block * previous_units != inputs or (isinstance(module, nn.Conv2d) and block != 1)):
            raise ValueError(
                f"layer {name!r} takes {inputs} inputs, which do not split into the {previous_units} units of the "
                "layer before it; weight matching needs a plain chain of layers"
            )
        prefix = f"{name}." if name else ""
        layers.append(Layer(f"{prefix}weight", f"{prefix}bias" if module.bias is not None else None, block))
        previous_units = module.weight.shape[0]
    return layers


def _unit_rows(weight: Tensor, units: int) -> Tensor:
    """``(units, -1)``: the outgoing weights of each input unit of a layer (its columns, column blocks or channels)."""
    return weight.reshape(weight.shape[0], units, -1).transpose(0, 1).reshape(units, -1)


def _permute_inputs(weight: Tensor, perm: Tensor, block: int) -> Tensor:
    """The weight with its input units (channels, or blocks of ``block`` columns) reordered by ``perm``."""
    if weight.dim() == 2:
        out = weight.shape[0]
        return weight.reshape(out, len(perm), block)[:, perm].reshape(out, -1)
    return weight[:, perm]


def permute_hidden(params: dict[str, Tensor], layers: list[Layer], perms: list[Tensor]) -> dict[str, Tensor]:
    """``params`` with hidden unit ``i`` of layer ``l`` taken from unit ``perms[l][i]`` (the same function).

    Args:
        params: parameters by name (``ParamSpace.unflatten``); names not in ``layers`` are copied.
        layers: the chain (:func:`chain_layers`).
        perms: one permutation per hidden layer (every layer but the last), each ``(units,)`` long.
    """
    out = dict(params)
    for index, layer in enumerate(layers):
        weight = params[layer.weight]
        if index > 0:
            weight = _permute_inputs(weight, perms[index - 1], layer.in_block)
        if index < len(perms):
            weight = weight[perms[index]]
            if layer.bias is not None:
                out[layer.bias] = params[layer.bias][perms[index]]
        out[layer.weight] = weight
    return out


def weight_matching(space: ParamSpace, a: Tensor, b: Tensor, max_sweeps: int = 100) -> list[Tensor]:
    """The permutations of B's hidden units that best match A's weights (coordinate ascent over the layers).

    Args:
        space: the parameter space of the task.
        a: the reference model ``(P,)``.
        b: the model to permute ``(P,)``.
        max_sweeps: passes over the layers at most (it stops at the first pass that changes nothing).

    Returns:
        One permutation ``(units,)`` per hidden layer, for :func:`permute_hidden`.
    """
    layers = chain_layers(space.model)
    first = {k: v.double() for k, v in space.unflatten(space.check(a)).items()}
    second = {k: v.double() for k, v in space.unflatten(space.check(b)).items()}
    perms = [torch.arange(first[layer.weight].shape[0], device=space.device) for layer in layers[:-1]]
    # a first pass from the input on incoming weights alone (each layer once its inputs are matched), then sweeps
    # on incoming and outgoing weights: the first pass finds the exact permutation of a permuted copy, which the
    # sweeps (only strict improvements) keep
    for index in range(len(perms)):
        _improve(perms, index, _matching_cost(first, second, layers, perms, index, outgoing=False))
    for _ in range(max_sweeps):
        changed = [_improve(perms, index, _matching_cost(first, second, layers, perms, index))
                   for index in range(len(perms))]  # fmt: skip
        if not any(changed):
            break
    return perms


def _improve(perms: list[Tensor], index: int, cost: Tensor) -> bool:
    """Replace ``perms[index]`` by the linear assignment of ``cost`` if that is strictly better; whether it was."""
    rows = torch.arange(len(cost), device=cost.device)
    current = float(cost[rows, perms[index]].sum())
    _, cols = linear_sum_assignment(cost.cpu().numpy(), maximize=True)
    candidate = torch.as_tensor(cols, device=cost.device)
    if float(cost[rows, candidate].sum()) > current + 1e-12 * max(1.0, abs(current)):
        perms[index] = candidate
        return True
    return False


def _matching_cost(
    first: dict[str, Tensor], second: dict[str, Tensor], layers: list[Layer], perms: list[Tensor], index: int,
    outgoing: bool = True,
) -> Tensor:  # fmt: skip
    """``(units, units)``: similarity of A's unit i and B's unit j of hidden layer ``index``, the others held.

    The inner products of the units' incoming weights and biases, plus (``outgoing``) of their outgoing weights.
    """
    layer, following = layers[index], layers[index + 1]
    units = len(perms[index])

    def incoming(params: dict[str, Tensor], perm: Tensor | None) -> Tensor:
        weight = params[layer.weight]
        if perm is not None:
            weight = _permute_inputs(weight, perm, layer.in_block)
        rows = [weight.reshape(units, -1)]
        if layer.bias is not None:
            rows.append(params[layer.bias].reshape(units, 1))
        return torch.cat(rows, dim=1)

    def leaving(params: dict[str, Tensor], perm: Tensor | None) -> Tensor:
        weight = params[following.weight]
        if perm is not None:
            weight = weight[perm]
        return _unit_rows(weight, units)

    before = perms[index - 1] if index > 0 else None
    after = perms[index + 1] if index + 1 < len(perms) else None
    cost = incoming(first, None) @ incoming(second, before).T
    return cost + leaving(first, None) @ leaving(second, after).T if outgoing else cost


def check_alignable(space: ParamSpace, method: str) -> None:
    """Refuse an alignment the space's model cannot take, before a command trains endpoints or writes anything.

    Raises:
        ConfigError: ``method`` permutes hidden units and the model is not a chain of ``Linear`` / ``Conv2d`` layers.
    """
    if method == "none":
        return
    try:
        chain_layers(space.model)
    except ValueError as exc:
        raise ConfigError(
            f"bad value for align: align={method} permutes the hidden units of a chain of Linear / Conv2d layers, and "
            f"the model of task {space.task.name} is not one ({exc}); use align=none"
        ) from None


def align(space: ParamSpace, a: Tensor, b: Tensor, method: str = "weight_matching") -> Tensor:
    """B with its hidden units permuted to match A (``method="weight_matching"``), or B itself (``"none"``).

    The result computes B's function; its entries are B's entries, reordered.

    Raises:
        ValueError: an unknown method, or a model weight matching cannot read as a chain (:func:`chain_layers`).
    """
    if method not in ALIGNMENTS:
        raise ValueError(f"align must be one of {', '.join(ALIGNMENTS)}, got {method!r}")
    b = space.check(b)
    if method == "none":
        return b
    layers = chain_layers(space.model)
    perms = weight_matching(space, a, b)
    permuted = permute_hidden(space.unflatten(b), layers, perms)
    return torch.cat([permuted[name].reshape(-1) for name in space.names])
