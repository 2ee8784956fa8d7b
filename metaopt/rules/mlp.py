"""A per-parameter MLP over Adam-like accumulator features, registered as ``mlp``.

In the spirit of learned_optimization's ``small_fc_lopt`` / ``adafac_mlp_lopt`` (Metz et al. 2022, "Practical tradeoffs
between memory, compute, and performance in learned optimizers"): a small MLP, shared by every coordinate, reads a
feature vector per coordinate and outputs a direction d and a magnitude m; the update is
``d * exp(m * exp_mult) * step_mult``. All coordinates of all parameters go through the MLP as rows of one batch.

Features of a coordinate with gradient g and value p at step t (state kept per coordinate unless noted):

* ``g`` and ``p`` (the gradient and the parameter value);
* momenta ``m_k = b_k m_k + (1 - b_k) g`` for each decay b_k of ``momentum_decays`` (0.5, 0.9, 0.99: small_fc_lopt's);
* ``rsqrt(v)`` with the second moment ``v = b2 v + (1 - b2) g^2`` (b2 = ``second_moment_decay``, bias-corrected);
* ``m_k * rsqrt(v)`` for each momentum (Adam's direction at several momenta);
* ``adam``: Adam's bias-corrected direction ``m_hat / (sqrt(v_hat) + eps)`` for the momentum at index
  ``adam_momentum`` (so a rule can be set to reproduce Adam exactly, see :func:`adam_weights`);
* ``factored``: the gradient over Adafactor's factored second moment (Shazeer & Stern 2018): for a parameter of
  shape (r, c...) row and column accumulators (EMAs of decay b2 of the row and column means of g^2 + eps^2; one
  vector each per tensor, a few floats) estimate ``v_ij = row_i col_j / (mean(row) (1 - b2^t))``; for a vector
  parameter it is ``g * rsqrt(v)``;
* training progress: ``tanh(t / s)`` for each time scale s of ``time_scales`` (learned_optimization's step features).

With ``normalize`` (the default) every feature but the progress ones is divided by its root mean square over the
coordinates of its tensor, so the MLP sees inputs of unit scale on any model (small_fc_lopt's second-moment
normalisation). State per coordinate: ``len(momentum_decays) + 1`` floats (4 by default), plus the factored row and
column vectors and one step counter per tensor.

One step is a fixed number of tensor operations whatever the number of tensors (about 60, plus the three products of
the MLP): the features are built feature-major, ``(F, N)``, from flat buffers of every coordinate; what is per tensor
(bias corrections, progress, the factored scale, the normalisation's means) is computed on ``(., T)`` and spread to
the coordinates by index; the factored accumulators of all matrices are one buffer updated by one ``index_add``. The
same code serves the in-place optimizer (under ``no_grad``) and the differentiable unroll. The in-place optimizer's
step (the drop-in step) differs in how, not in what: it writes the features into a buffer it keeps, runs the MLP in
cache-sized blocks with each tensor's normalisation and progress features folded into the first layer's weights (so
they are never spread to the coordinates of a block inside one tensor), and with a few large
tensors (``_FEW_TENSORS``) reduces tensor by tensor where scattered adds and narrow products cost more, and multiplies
each tensor's slice by its own bias corrections and factored estimate instead of spreading them (the same products).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from typing_extensions import override

from envs.tooling.config import check_range
from metaopt.rules.base import MAX_LAYOUTS, LearnedRule, ParamState, plain_tensors

__all__ = ["MLPConfig", "PerParameterMLP", "adam_weights"]

_EPS = 1e-8
_TINY = 1e-30
"""Floor of the second moment under the square root of the Adam feature, on the meta-graph only."""


@dataclass
class MLPConfig:
    """Architecture and features of the per-parameter MLP; recorded in every checkpoint."""

    hidden_size: int = 32
    """Units per hidden layer (at least 2)."""
    num_layers: int = 2
    """Hidden layers (ReLU)."""
    momentum_decays: list[float] = field(default_factory=lambda: [0.5, 0.9, 0.99])
    """Decays of the momentum accumulators."""
    second_moment_decay: float = 0.999
    """Decay of the second-moment accumulator (and of the factored ones)."""
    adam_momentum: int = 1
    """Index in ``momentum_decays`` of the momentum of the ``adam`` feature (0.9 by default, as Adam's beta1)."""
    eps: float = 1e-8
    """Adam's epsilon in the ``adam`` feature."""
    time_scales: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0, 1000.0, 10000.0])
    """Time scales s of the progress features tanh(t / s)."""
    normalize: bool = True
    """Divide each feature by its root mean square over its tensor's coordinates."""
    step_mult: float = 0.001
    """Scale of the update (small_fc_lopt's 0.001)."""
    exp_mult: float = 0.001
    """Scale of the magnitude output inside the exponential (small_fc_lopt's 0.001)."""

    def __post_init__(self) -> None:
        check_range(self, "hidden_size", low=2, integer=True)
        check_range(self, "num_layers", low=1, integer=True)
        check_range(self, "momentum_decays", low=0, high=1, high_open=True)
        check_range(self, "second_moment_decay", low=0, high=1, high_open=True)
        check_range(self, "adam_momentum", low=0, high=len(self.momentum_decays) - 1, integer=True)
        check_range(self, "eps", low=0, low_open=True)
        check_range(self, "time_scales", low=0, low_open=True)
        check_range(self, "step_mult", low=0, low_open=True)
        check_range(self, "exp_mult", low=0)

    @property
    def num_features(self) -> int:
        """Inputs of the MLP per coordinate."""
        return 2 + 2 * len(self.momentum_decays) + 3 + len(self.time_scales)


class PerParameterMLP(LearnedRule):
    """An MLP shared by every coordinate over accumulator features (see the module docstring).

    Args:
        config: the architecture and features (default: 2 x 32 ReLU units, small_fc_lopt's decays and scales).
    """

    Config = MLPConfig
    config: MLPConfig

    def __init__(self, config: MLPConfig | None = None):
        super().__init__(dataclasses.replace(config) if config is not None else MLPConfig())
        cfg = self.config
        sizes = [cfg.num_features] + [cfg.hidden_size] * cfg.num_layers
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.hidden = nn.Sequential(*layers)
        self.readout = nn.Linear(cfg.hidden_size, 2)  # direction, magnitude
        with torch.no_grad():  # start near "no update": meta-training grows what helps
            self.readout.weight.mul_(1e-3)
            self.readout.bias.zero_()
        self._layouts: dict[tuple, _Layout] = {}  # per list of parameter shapes (and dtype, device): the constants
        self._features: Tensor | None = None  # the drop-in step's feature buffer (see :meth:`_feature_buffer`)

    @override
    def __getstate__(self) -> dict:
        # copies and pickles go without the feature buffer: it holds nothing between steps
        return {**super().__getstate__(), "_features": None}

    # -- state ----------------------------------------------------------------------------------------------------

    @property
    @override
    def separable(self) -> bool:
        """True: features, normalisation and factored moments are per coordinate or per tensor."""
        return True

    @override
    def init_state(self, param: Tensor) -> ParamState:
        dtype, device, n = self.dtype, param.device, param.numel()
        rows, cols = _factored_shape(param)
        return {
            "momenta": torch.zeros(n, len(self.config.momentum_decays), dtype=dtype, device=device),
            "second_moment": torch.zeros(n, dtype=dtype, device=device),
            "row": torch.zeros(rows, dtype=dtype, device=device),
            "col": torch.zeros(cols, dtype=dtype, device=device),
            "step": torch.zeros(1, dtype=dtype, device=device),
        }

    @override
    def join(self, pieces: Sequence[ParamState]) -> dict[str, Tensor]:
        # one cat per kind (cat promotes mixed dtypes; one cast after it); ``momenta: (K, N)`` is feature-major, as
        # the features are built (a momentum's row is contiguous: its lerp, products and copy into the features are
        # one vectorised pass, where an (N, K) layout made each a strided one); ``factored: (R + C,)`` holds the row
        # accumulators of every matrix, then their column accumulators (vectors have none)
        dtype = self.dtype
        return {
            "momenta": torch.cat([p["momenta"].t() for p in pieces], dim=1).to(dtype),
            "second_moment": torch.cat([p["second_moment"] for p in pieces]).to(dtype),
            "factored": torch.cat([p["row"] for p in pieces] + [p["col"] for p in pieces]).to(dtype),
            "steps": torch.cat([p["step"] for p in pieces]).to(dtype),
        }

    @override
    def split(self, state: dict, params: Sequence[Tensor]) -> list[ParamState]:
        layout = self._layout(params, state["momenta"])
        factored = state["factored"].split(layout.row_sizes + layout.col_sizes)
        pieces = zip(
            (m.t().contiguous() for m in state["momenta"].split(layout.sizes, dim=1)),
            state["second_moment"].split(layout.sizes),
            factored[: len(params)],
            factored[len(params) :],
            state["steps"].split(1),
        )
        return [{"momenta": m, "second_moment": v, "row": r, "col": c, "step": s} for m, v, r, c, s in pieces]

    # -- the step -------------------------------------------------------------------------------------------------

    def features(self, grads: Tensor, state: dict, params: Sequence[Tensor]) -> tuple[Tensor, dict]:
        """``(features (N, F), new_state)`` for every coordinate (a transposed view of :meth:`_inputs`)."""
        layout = self._layout(params, grads)
        inputs, new_state = self._assemble(*self._inputs(grads, state, params, layout), layout)
        return inputs.t(), new_state

    @override
    def step(self, grads: Tensor, state: dict, params: Sequence[Tensor]) -> tuple[Tensor, dict]:
        layout = self._layout(params, grads)
        scalars = layout.scalars(self.config)
        if plain_tensors():  # the drop-in step: in cache-sized blocks of coordinates, biases and scales folded
            raw = self._feature_buffer(layout, grads)
            _, scales, progress, new_state = self._inputs(grads, state, params, layout, out=raw[:-1])
            return self._blocked_update(raw, scales, progress, layout), new_state
        raw, scales, progress, new_state = self._inputs(grads, state, params, layout)
        hidden, new_state = self._assemble(raw, scales, progress, new_state, layout)
        # feature-major (F, N): each layer is one product W @ h, the fastest layout when N >> F
        for layer in self._linears:
            hidden = torch.addmm(layer.bias[:, None], layer.weight, hidden).relu_()
        direction, magnitude = torch.addmm(self.readout.bias[:, None], self.readout.weight, hidden).unbind()
        return direction * torch.exp(magnitude * scalars.exp_mult) * scalars.step_mult, new_state

    def _assemble(
        self, raw: Tensor, scales: Tensor | None, progress: Tensor, new_state: dict, layout: _Layout
    ) -> tuple[Tensor, dict]:
        """``(features (F, N), new_state)`` from the parts :meth:`_inputs` returns (the differentiable path)."""
        if scales is not None:
            raw = raw * layout.expand(scales)
        return torch.cat([raw, layout.expand(progress)]), new_state

    def _blocked_update(self, raw: Tensor, scales: Tensor | None, progress: Tensor, layout: _Layout) -> Tensor:
        """The MLP's update ``(N,)`` from the parts :meth:`_inputs` returns, ``_BLOCK`` coordinates at a time.

        No autograd. ``raw: (F - S + 1, N)`` holds the raw features over a row of ones. The activations of a block
        stay in the cache between the layers (the unblocked products write and read ``(H, N)`` from memory), and
        each bias is folded into its product as the last column of the weight against the row of ones, which ReLU
        keeps, so a layer is one ``mm`` into a buffer reused by every block. What is per tensor is folded into the
        first layer: a block inside one tensor multiplies its raw features in place by that tensor's weights, the
        normalisation scaling their columns and the progress features added to the bias (:meth:`_per_tensor_first`),
        so its features are never copied; only a block across tensors assembles its features in a buffer, spreading
        the per-tensor values to its coordinates. The readout's rows are scaled by ``step_mult`` and ``exp_mult``.
        """
        first, *weights = self._folded_weights(raw.dtype)
        per_tensor = self._per_tensor_first(first, scales, progress).unbind()  # (H, F - S + 1) each
        num_raw, num = raw.shape[0] - 1, raw.shape[1]
        readouts = raw.new_empty(2, num)  # direction and magnitude
        block = min(_BLOCK if raw.device.type == "cpu" else _DEVICE_BLOCK, num)
        spread, buffers, outputs = _block_buffers([first, *weights], block, raw)
        layers = list(zip(weights[:-1], buffers[:-1], outputs[1:]))  # the hidden layers after the first
        blocks = zip(
            range(0, num, block), raw.split(block, dim=1), readouts.split(block, dim=1), layout.block_tensors(block)
        )
        for start, inputs, target, tensor in blocks:
            if inputs.shape[1] < block:  # the last, shorter block: buffers of its width
                block = inputs.shape[1]
                spread, buffers, outputs = _block_buffers([first, *weights], block, raw)
                layers = list(zip(weights[:-1], buffers[:-1], outputs[1:]))
            if tensor >= 0:
                torch.mm(per_tensor[tensor], inputs, out=outputs[0]).relu_()
            else:
                ids = layout.ids[start : start + block]
                if scales is None:
                    spread[:num_raw].copy_(inputs[:-1])
                else:
                    torch.mul(inputs[:-1], scales.index_select(1, ids), out=spread[:num_raw])
                torch.index_select(progress, 1, ids, out=spread[num_raw:-1])
                torch.mm(first, spread, out=outputs[0]).relu_()
            for weight, source, output in layers:
                torch.mm(weight, source, out=output).relu_()
            torch.mm(weights[-1], buffers[-1], out=target)
        direction, magnitude = readouts.unbind()
        return direction.mul_(magnitude.exp_())

    def _folded_weights(self, dtype: torch.dtype) -> list[Tensor]:
        """Each layer's ``[W | b]`` (hidden layers, then the readout), in ``dtype``.

        The readout's direction row is multiplied by ``step_mult`` and its magnitude row by ``exp_mult``. Built at
        every step (a few thousand floats): a cache keyed on the weights' versions would miss a change made through
        ``.data`` (as ``vector_to_parameters`` and ES perturbations do).
        """
        layers = [*self._linears, self.readout]
        folded = [torch.cat([layer.weight, layer.bias[:, None]], dim=1).to(dtype) for layer in layers]
        readout = folded[-1]
        readout[0].mul_(self.config.step_mult)  # the update's scale
        readout[1].mul_(self.config.exp_mult)  # the magnitude's, inside the exponential
        return folded

    def _feature_buffer(self, layout: _Layout, like: Tensor) -> Tensor:
        """``(F - S + 1, N)``: the drop-in step's raw features over a row of ones, one buffer kept between steps.

        In ``like``'s dtype and on its device. A fresh one at every step costs more than its arithmetic from about
        700k coordinates (float32), where the allocator maps it anew and each of its pages faults on its first write
        (about 20 ms a step at 1M). So the rule keeps one, for the last list of shapes it stepped: 48 bytes per
        coordinate in float32, not in copies or pickles; two steps of one rule must not run concurrently.
        """
        shape = (layout.num_raw + 1, layout.num)
        buffer = self._features
        if buffer is None or buffer.shape != shape or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self._features = like.new_empty(shape)
            buffer[-1].fill_(1.0)
        return buffer

    @staticmethod
    def _per_tensor_first(first: Tensor, scales: Tensor | None, progress: Tensor) -> Tensor:
        """``(T, H, F - S + 1)``: each tensor's first layer ``[W_raw diag(scales) | b + W_progress progress]``.

        ``first = [W_raw | W_progress | b]`` reads the normalised features; the folded weight reads the raw ones.
        """
        num_progress = progress.shape[0]
        weight, bias = first[:, : -num_progress - 1], first[:, -1:]
        biases = torch.addmm(bias, first[:, -num_progress - 1 : -1], progress)  # (H, T)
        if scales is None:
            weights = weight.expand(progress.shape[1], *weight.shape)
        else:
            weights = weight * scales.t()[:, None, :]
        return torch.cat([weights, biases.t()[:, :, None]], dim=2)

    def _inputs(
        self, grads: Tensor, state: dict, params: Sequence[Tensor], layout: _Layout, out: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor, dict]:
        """``(raw (F - S, N), scales (F - S, T) or None, progress (S, T), new_state)``: the parts of the features.

        The features, feature-major in the order of the module docstring, are ``raw`` times each tensor's
        normalisation ``scales`` (None without ``normalize``) spread to its coordinates, then the ``progress``
        features spread likewise (:meth:`_assemble`; the blocked step folds them into its first layer). ``raw`` is
        written into ``out`` when given (no autograd).

        Every operation covers all coordinates of all tensors at once (the step's cost is a fixed number of tensor
        operations, whatever the number of tensors): what is per tensor (bias corrections, progress, the factored
        scale, normalisation) is computed on ``(., T)`` and spread to the coordinates with one ``index_select``.
        The scalars are the layout's 0-d tensors (see :class:`_Scalars`).
        """
        cfg = self.config
        scalars = layout.scalars(cfg)
        b2 = cfg.second_moment_decay
        steps = state["steps"] + scalars.one  # (T,): one counter per tensor
        # (2, T): 1 / (1 - b1^t), 1 / (1 - b2^t)
        corrections = torch.reciprocal(scalars.one - torch.pow(layout.bases, steps))
        squares = grads * grads
        momenta = torch.lerp(state["momenta"], grads, layout.complements)  # (K, N): b m + (1 - b) g
        second = torch.lerp(state["second_moment"], squares, 1 - b2)
        factored_state, factored_scale = self._factored_moment(squares, state["factored"], corrections[1:], layout)
        per_tensor = torch.cat([corrections, factored_scale, torch.tanh(steps * layout.inv_scales)])  # (3 + S, T)
        # the drop-in step over a few large tensors multiplies tensor by tensor by the per-tensor values (the same
        # products); otherwise they are spread to the coordinates, one index_select for all tensors
        by_tensor = out is not None and layout.by_tensor
        spread = None if by_tensor else layout.expand(per_tensor[:3])  # (3, N)
        k = len(cfg.momentum_decays)
        # where the features computed here go: their rows of ``out``, or new tensors stacked below
        rows: list[Tensor | None] = [None] * layout.num_raw if out is None else list(out)
        v_hat = _times(second, 1, per_tensor, spread, layout)
        v_floored = v_hat + scalars.eps_squared
        rsqrt = torch.rsqrt(v_floored, out=rows[2 + 2 * k])
        # on the meta-graph sqrt's slope at v = 0 (a coordinate whose gradients were all zero) is infinite, and times
        # the zero that reaches it, NaN: the clamp keeps it finite (where v = 0 the momentum is 0: the feature is too)
        root = v_hat.clamp_min(_TINY).sqrt() if v_hat.requires_grad else v_hat.sqrt()
        adam = torch.div(
            _times(momenta[cfg.adam_momentum], 0, per_tensor, spread, layout),
            root + scalars.adam_eps,
            out=rows[3 + 2 * k],
        )
        if layout.factored is None:  # no matrices: every coordinate is over its own second moment
            factored = torch.mul(grads, rsqrt, out=rows[4 + 2 * k])
        else:  # g_ij / sqrt(row_i col_j / (mean(row) (1 - b2^t))), the per-tensor scale spread as factored_scale
            if spread is None:
                v = _factored_by_tensor(factored_state, per_tensor[2], v_floored, layout)
            else:
                row, col = factored_state.index_select(0, layout.factored.index).view(2, -1).unbind()
                v = row * col * spread[2]
                if layout.factored.is_matrix is not None:
                    v = torch.where(layout.factored.is_matrix, v, v_floored)
            factored = torch.mul(grads, torch.rsqrt(v), out=rows[4 + 2 * k])
        momenta_rsqrt = torch.mul(momenta, rsqrt, out=None if out is None else out[2 + k : 2 + 2 * k])
        values = torch.cat([p.reshape(-1) for p in params])
        if values.dtype != grads.dtype:
            values = values.to(grads.dtype)
        if out is None:
            raw = torch.vstack([grads, values, momenta, momenta_rsqrt, rsqrt, adam, factored])  # (11, N)
        else:  # the rest of the features copied around those written in place
            raw = out
            torch.vstack([grads, values, momenta], out=raw[: 2 + k])
        scales = torch.rsqrt(layout.segment_mean_square(raw) + scalars.norm_floor) if cfg.normalize else None
        new_state = {"momenta": momenta, "second_moment": second, "factored": factored_state, "steps": steps}
        return raw, scales, per_tensor[3:], new_state

    def _factored_moment(
        self, squares: Tensor, accumulators: Tensor, inv_correction2: Tensor, layout: _Layout
    ) -> tuple[Tensor, Tensor]:
        """The new row and column accumulators ``(R + C,)`` and each tensor's scale ``(1, T)`` of their product.

        Row i of a matrix averages ``g_ij^2 + eps^2`` over j, column j over i (an EMA of decay b2 each); the scale
        is ``1 / (mean of the matrix's rows * (1 - b2^t))`` (1 / (1 - b2^t) for vectors, whose scale is unused).
        """
        if layout.factored is None:
            return accumulators, inv_correction2
        axes = layout.factored
        g2 = squares + layout.scalars(self.config).eps_squared
        if layout.by_tensor and plain_tensors():  # a few reductions cost less than scattered adds
            pieces = g2.split(layout.sizes)
            matrices = [piece.view(r, c) for piece, r, c in zip(pieces, layout.row_sizes, layout.col_sizes) if r]
            sums = torch.cat([m.sum(1) for m in matrices] + [m.sum(0) for m in matrices])
        else:
            rows, cols = axes.sum_index.view(2, -1)  # the rows' sums, then the columns': g2 is never copied twice
            sums = g2.new_zeros(axes.num + 1).index_add_(0, rows, g2).index_add_(0, cols, g2)[:-1]  # vectors: slot -1
        new = torch.lerp(accumulators, sums * axes.inv_length, 1 - self.config.second_moment_decay)
        if axes.row_averager is not None:  # 1 for vectors: no division by 0
            row_means = torch.addmv(axes.is_vector, axes.row_averager, new)
        else:
            row_sums = new.new_zeros(axes.num_tensors + 1).index_add_(0, axes.row_tensor, new)[:-1]
            row_means = torch.addcmul(axes.is_vector, row_sums, axes.inv_rows)
        return new, inv_correction2 / row_means

    @property
    def _linears(self) -> list[nn.Linear]:
        return [m for m in self.hidden if isinstance(m, nn.Linear)]

    def _layout(self, params: Sequence[Tensor], grads: Tensor) -> _Layout:
        key = (tuple([p.shape for p in params]), grads.dtype, grads.device)
        layout = self._layouts.get(key)
        if layout is None:
            shapes = tuple(tuple(shape) for shape in key[0])
            if len(self._layouts) >= MAX_LAYOUTS:  # the oldest goes: a stacked family meets a new list of shapes often
                del self._layouts[next(iter(self._layouts))]
            layout = self._layouts[key] = _Layout(shapes, self.config, grads.dtype, grads.device)
        return layout


def _times(values: Tensor, row: int, per_tensor: Tensor, spread: Tensor | None, layout: _Layout) -> Tensor:
    """``values (N,)`` times each tensor's value in row ``row`` of ``per_tensor (., T)``.

    By that row spread to the coordinates (``spread``: the first rows of ``per_tensor`` spread), or, without a spread,
    tensor by tensor: the same products, without writing the spread row.
    """
    if spread is not None:
        return values * spread[row]
    result = torch.empty_like(values)
    for piece, target, factor in zip(values.split(layout.sizes), result.split(layout.sizes), per_tensor[row].unbind()):
        torch.mul(piece, factor, out=target)
    return result


def _factored_by_tensor(accumulators: Tensor, scales: Tensor, v_floored: Tensor, layout: _Layout) -> Tensor:
    """``(N,)``: each matrix coordinate's factored second moment ``row_i col_j scale``, the vectors' ``v_floored``.

    Tensor by tensor (an outer product of the matrix's row and column accumulators): what the spread path gives by
    gathering every coordinate's accumulators, the same products in the same order.
    """
    v = torch.empty_like(v_floored)
    row_at, col_at = 0, sum(layout.row_sizes)
    pieces = zip(layout.row_sizes, layout.col_sizes, v.split(layout.sizes), v_floored.split(layout.sizes), scales)
    for rows, cols, target, floored, scale in pieces:
        if rows == 0:  # a vector: over its own second moment
            target.copy_(floored)
            continue
        row, col = accumulators[row_at : row_at + rows], accumulators[col_at : col_at + cols]
        torch.mul(row[:, None], col[None, :], out=target.view(rows, cols)).mul_(scale)
        row_at, col_at = row_at + rows, col_at + cols
    return v


def _block_buffers(weights: list[Tensor], block: int, like: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The blocked step's buffers for blocks of ``block`` coordinates: ``(rows + 1, block)`` each, the last row ones.

    ``(spread, buffers, outputs)``: ``spread`` holds the features of a block across tensors (the first layer's
    input), ``buffers[i]`` the input of layer ``i + 1``, ``outputs[i]`` its rows above the ones (layer ``i``'s output).
    """
    made = [like.new_empty(weight.shape[1], block) for weight in weights]
    for buffer in made:
        buffer[-1].fill_(1.0)
    return made[0], made[1:], [buffer[:-1] for buffer in made[1:]]


def _factored_shape(param: Tensor | tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) of a parameter's factored moment: (shape[0], prod(shape[1:])), or (0, 0) for vectors."""
    shape = tuple(param.shape) if isinstance(param, Tensor) else param
    if len(shape) < 2:
        return 0, 0
    return int(shape[0]), int(math.prod(shape[1:]))


_BLOCK = 4096
"""Coordinates per block of the drop-in step's MLP: its activations, (H + 1) * _BLOCK floats a layer, stay in cache."""

_DEVICE_BLOCK = 1 << 20
"""Coordinates per block on an accelerator, where a block costs kernel launches and no cache is to be kept."""

_SQUARE_CHUNK = 1 << 17
"""Coordinates per chunk of the squares summed for the per-tensor means when they are not one product."""

_FEW_TENSORS = 16
"""Tensors up to which the drop-in step reduces tensor by tensor (the sums of squares of the per-tensor means, the
factored moments' row and column sums) rather than by one product or scattered adds over all coordinates..."""

_LARGE_TENSORS = 1 << 13
"""...when they hold this many coordinates on average (below it, the more operations cost more than they save)."""

_DENSE_AVERAGE_LIMIT = 2**20
"""Largest N * T for which per-tensor means are one product with a dense (T, N) averaging matrix (4 MB in float32)."""


class _FactoredLayout:
    """Where each coordinate's row and column accumulators are in the ``(R + C,)`` buffer, and the constants.

    The buffer holds the rows of every matrix in order, then the columns of every matrix.
    """

    def __init__(self, factored: list[tuple[int, int]], sizes: list[int], dtype: torch.dtype, device: torch.device):
        num_rows = sum(r for r, _ in factored)
        self.num = num_rows + sum(c for _, c in factored)
        self.num_tensors = len(sizes)
        rows, cols, lengths, row_tensor, discarded = [], [], [], [], []
        row_offset, col_offset = 0, num_rows
        for tensor, ((r, c), size) in enumerate(zip(factored, sizes)):
            discarded.append(torch.full((size,), r == 0))
            if r == 0:  # a vector: reads accumulator 0 (masked), sums into the discarded slot
                rows.append(torch.zeros(size, dtype=torch.long))
                cols.append(torch.zeros(size, dtype=torch.long))
                continue
            rows.append(torch.arange(r).repeat_interleave(c) + row_offset)
            cols.append(torch.arange(c).repeat(r) + col_offset)
            lengths += [float(c)] * r
            row_tensor += [tensor] * r
            row_offset, col_offset = row_offset + r, col_offset + c
        lengths += [float(r) for r, c in factored for _ in range(c)]
        row_tensor += [len(sizes)] * (self.num - num_rows)  # columns go to a discarded slot
        self.index = torch.cat(rows + cols).to(device, torch.int32)
        """``(2 N,)``: the row accumulator of every coordinate, then its column accumulator (0 for vectors)."""
        self.sum_index = self.index
        """``(2 N,)``: ``index`` with the vectors' coordinates sent to a discarded slot ``R + C`` (summing them adds
        nothing to any accumulator, as a mask would, without the mask's pass)."""
        if any(r == 0 for r, _ in factored):
            vectors = torch.cat(discarded * 2).to(device)
            self.sum_index = torch.where(vectors, self.num, self.index).to(torch.int32)
        self.inv_length = 1 / torch.tensor(lengths, dtype=dtype, device=device)
        """``(R + C,)``: 1 / the number of coordinates each accumulator averages."""
        self.row_tensor = torch.tensor(row_tensor, dtype=torch.int32, device=device)
        """``(R + C,)``: the tensor of each row accumulator (T for columns)."""
        self.inv_rows = torch.tensor([1 / r if r else 0.0 for r, _ in factored], dtype=dtype, device=device)
        self.row_averager: Tensor | None = None
        """``(T, R + C)``, when small: ``row_averager @ accumulators`` is each matrix's mean row accumulator."""
        if self.num * len(sizes) <= _DENSE_AVERAGE_LIMIT:
            one_hot = torch.nn.functional.one_hot(self.row_tensor.long(), len(sizes) + 1)[:, :-1].t()
            self.row_averager = (one_hot * self.inv_rows[:, None]).contiguous()
        self.is_vector = torch.tensor([float(r == 0) for r, _ in factored], dtype=dtype, device=device)
        self.is_matrix: Tensor | None = None
        """``(N,)`` bool: the coordinates of matrices (None when all are matrices)."""
        if any(r == 0 for r, _ in factored):
            mask = [torch.full((size,), r > 0, dtype=torch.bool) for (r, _), size in zip(factored, sizes)]
            self.is_matrix = torch.cat(mask).to(device)


class _Scalars:
    """The scalars of a step as 0-d tensors of its dtype (float32 or float64; plain floats for other dtypes).

    ``x + 1e-16`` converts the Python number to a tensor at every call, which costs as much as the addition on a
    small model; a 0-d tensor of ``x``'s dtype holding the number rounded to that dtype gives the same result without
    the conversion. (Not in half precision, where a Python number takes part at float32 precision and a 0-d half
    tensor would round it to half.)
    """

    def __init__(self, config: MLPConfig, dtype: torch.dtype, device: torch.device):
        self.options = (config.eps, config.exp_mult, config.step_mult)
        """The options the scalars were made from."""
        exact = dtype in (torch.float32, torch.float64)

        def scalar(value: float) -> Tensor | float:
            return torch.tensor(value, dtype=dtype, device=device) if exact else value

        self.one = scalar(1.0)
        self.eps_squared = scalar(_EPS**2)
        self.norm_floor = scalar(1e-12)
        self.adam_eps = scalar(config.eps)
        self.exp_mult = scalar(config.exp_mult)
        self.step_mult = scalar(config.step_mult)


class _Layout:
    """What a step needs about a list of parameter shapes, computed once: sizes, spreading indices, constants.

    Memory per coordinate: an int32 tensor index, two int32 accumulator indices (when there are matrices), a bool
    mask and two more int32 indices for the sums (when there are both matrices and vectors): 21 bytes; and T floats
    of a dense averaging matrix when N * T is at most ``_DENSE_AVERAGE_LIMIT``.
    """

    def __init__(
        self, shapes: tuple[tuple[int, ...], ...], config: MLPConfig, dtype: torch.dtype, device: torch.device
    ):
        self.sizes = [math.prod(shape) for shape in shapes]
        self.num = sum(self.sizes)
        self.num_raw = config.num_features - len(config.time_scales)
        """Features per coordinate before the progress ones (F - S)."""
        self.by_tensor = len(self.sizes) <= _FEW_TENSORS and self.num >= _LARGE_TENSORS * len(self.sizes)
        """Whether the drop-in step reduces tensor by tensor (see ``_FEW_TENSORS``)."""
        self.lengths = torch.tensor(self.sizes, device=device)
        ids = torch.repeat_interleave(torch.arange(len(self.sizes), device=device), self.lengths)
        self.ids = ids.to(torch.int32)
        """``(N,)``: the tensor of each coordinate."""
        counts = torch.tensor(self.sizes, dtype=dtype, device=device)
        self.inv_counts = 1 / counts
        self.averager: Tensor | None = None
        """``(N, T)``, when small: ``x (F, N) @ averager`` are the per-tensor means (one product)."""
        if self.num * len(self.sizes) <= _DENSE_AVERAGE_LIMIT:
            averager = (torch.nn.functional.one_hot(ids, len(self.sizes)).t() / counts[:, None]).contiguous()
            self.averager = averager.t()  # a transposed view: the fast operand of the product
        self.complements = 1 - torch.tensor(config.momentum_decays, dtype=dtype, device=device)[:, None]  # (K, 1)
        adam_decay = config.momentum_decays[config.adam_momentum]
        self.bases = torch.tensor([[adam_decay], [config.second_moment_decay]], dtype=dtype, device=device)
        self.inv_scales = 1 / torch.tensor(config.time_scales, dtype=dtype, device=device)[:, None]  # (S, 1)
        factored = [_factored_shape(shape) for shape in shapes]
        self.row_sizes = [r for r, _ in factored]
        self.col_sizes = [c for _, c in factored]
        matrices = any(r > 0 for r, _ in factored)
        self.factored = _FactoredLayout(factored, self.sizes, dtype, device) if matrices else None
        self._scalars: _Scalars | None = None
        self._block_tensors: dict[int, list[int]] = {}

    def scalars(self, config: MLPConfig) -> _Scalars:
        """The step's scalars for ``config`` (rebuilt when an option they hold changes, as ``adam_weights`` does)."""
        scalars = self._scalars
        if scalars is None or scalars.options != (config.eps, config.exp_mult, config.step_mult):
            scalars = self._scalars = _Scalars(config, self.bases.dtype, self.bases.device)
        return scalars

    def block_tensors(self, block: int) -> list[int]:
        """The tensor of each block of ``block`` coordinates (the last shorter), or -1 for a block across tensors."""
        tensors = self._block_tensors.get(block)
        if tensors is None:
            firsts = self.ids[::block]
            lasts = self.ids[torch.arange(block, self.num + block, block).clamp_(max=self.num) - 1]
            tensors = self._block_tensors[block] = torch.where(firsts == lasts, firsts, -1).tolist()
        return tensors

    def expand(self, per_tensor: Tensor) -> Tensor:
        """``(F, N)``: each tensor's column of ``per_tensor: (F, T)`` repeated for its coordinates."""
        return per_tensor.index_select(1, self.ids)

    def segment_mean_square(self, values: Tensor) -> Tensor:
        """``(F, T)``: the mean of the squares of each row of ``values: (F, N)`` over the coordinates of each tensor."""
        plain = plain_tensors()
        if self.averager is not None and not (plain and self.by_tensor):
            return (values * values) @ self.averager
        parts = values.split(self.sizes, dim=1)
        if not plain:
            # one contiguous row-slice sum per tensor: no transposed copy of ``values`` (segment_reduce's layout)
            return torch.stack([(part * part).sum(1) for part in parts], dim=1) * self.inv_counts
        # the squares in chunks of columns through one buffer: a fresh (F, N) of squares at every step costs more in
        # page faults than its arithmetic; and a few tensors' sums cost less than the product with the averager,
        # whose (N, T) operand is too narrow for the matmul kernels
        scratch = values.new_empty(values.shape[0], min(_SQUARE_CHUNK, self.num))
        sums = values.new_zeros(len(parts), values.shape[0])  # (T, F)
        for part, total in zip(parts, sums):
            for piece in part.split(_SQUARE_CHUNK, dim=1):
                total += torch.mul(piece, piece, out=scratch[:, : piece.shape[1]]).sum(1)
        return sums.t() * self.inv_counts


@torch.no_grad()
def adam_weights(rule: PerParameterMLP, lr: float) -> PerParameterMLP:
    """Set ``rule``'s weights so that it is Adam with learning rate ``lr`` (and the rule's ``eps`` and decays).

    The ``adam`` feature passes through the ReLU layers as the pair (relu(x), relu(-x)), the readout takes their
    difference times -1, the magnitude is 0, and ``step_mult`` becomes ``lr``. Needs ``normalize=False`` (the
    normalisation rescales the feature).

    Raises:
        ValueError: the rule normalises its features.
    """
    if rule.config.normalize:
        raise ValueError("adam_weights needs a rule built with normalize=False")
    adam_index = 2 + 2 * len(rule.config.momentum_decays) + 1
    linears = [m for m in rule.hidden if isinstance(m, nn.Linear)]
    for layer in linears:
        layer.weight.zero_()
        layer.bias.zero_()
    linears[0].weight[0, adam_index] = 1.0
    linears[0].weight[1, adam_index] = -1.0
    for layer in linears[1:]:
        layer.weight[0, 0] = 1.0
        layer.weight[1, 1] = 1.0
    rule.readout.weight.zero_()
    rule.readout.bias.zero_()
    rule.readout.weight[0, 0] = -1.0
    rule.readout.weight[0, 1] = 1.0
    rule.config.step_mult = float(lr)
    return rule
