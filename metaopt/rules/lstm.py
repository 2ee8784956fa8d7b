"""The coordinatewise LSTM rule (Andrychowicz et al. 2016, section 2.1 and Figure 3), registered as ``lstm``.

One small two-layer LSTM is shared by every coordinate of every parameter: each coordinate is a row of one batch, with
its own hidden state, and the network maps the preprocessed gradient of that coordinate to its update. Rows never
interact, so the update of a coordinate does not depend on how parameters are grouped into tensors, and the whole
model is updated with a single batched call per step (:meth:`CoordinateLSTM.step`), whatever its number of tensors.

Shapes: ``N`` coordinates, ``F`` features per coordinate, ``L`` layers of ``H`` units. The recurrent state is an
:data:`LSTMState`, the tuple ``(h_1, c_1, ..., h_L, c_L)`` of ``(N, H)`` tensors: kept apart, autograd never has to
slice or restack one big tensor at every step. Where one tensor per parameter is wanted (``Optimizer.state_dict``)
:func:`pack_state` stacks it into ``(N, L, 2, H)``: a parameter's :data:`~metaopt.rules.base.ParamState` is
``{"hidden": (n, L, 2, H)}``.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors
from typing_extensions import override

from envs.tooling.config import check_range
from metaopt.rules.base import (
    LearnedRule,
    ParamState,
    apply_update,
    finite,
    plain_tensors,
    warn_compile_unavailable,
)
from metaopt.rules.features import FEATURE_MODES, num_features, preprocess

__all__ = [
    "CoordinateLSTM",
    "LSTMConfig",
    "LSTMState",
    "cat_states",
    "initial_state",
    "lstm_step",
    "pack_state",
    "split_state",
    "unpack_state",
]

LSTMState = tuple[Tensor, ...]
"""``(h_1, c_1, ..., h_L, c_L)``, each ``(N, H)``: the recurrent state of N coordinates."""


@dataclass
class LSTMConfig:
    """Architecture of the coordinatewise LSTM; recorded in every checkpoint."""

    features: str = "log_sign"
    """Gradient preprocessing: log_sign (L2L, p below) or scaled (g * input_scale)."""
    p: float = 10.0
    """Cut-off exponent of the log_sign preprocessing (10 in the paper)."""
    input_scale: float = 1.0
    """Factor applied to the gradient by the scaled preprocessing."""
    hidden_size: int = 20
    """Units per LSTM layer (20 in the paper)."""
    num_layers: int = 2
    """Stacked LSTM layers (2 in the paper)."""
    output_scale: float = 0.1
    """Factor applied to the linear read-out to give the update (0.1 in the paper)."""

    def __post_init__(self) -> None:
        if self.features not in FEATURE_MODES:
            raise ValueError(f"unknown features {self.features!r}; valid: {', '.join(FEATURE_MODES)}")
        check_range(self, "p", low=0, low_open=True)
        check_range(self, "input_scale", low=0, low_open=True)
        check_range(self, "hidden_size", low=1, integer=True)
        check_range(self, "num_layers", low=1, integer=True)
        check_range(self, "output_scale", low=0, low_open=True)


class CoordinateLSTM(LearnedRule):
    """Stacked ``nn.LSTMCell`` layers and a linear read-out, applied to every coordinate as a row of one batch.

    Args:
        config: the architecture; default the paper's (log_sign features, 2 x 20 units, output scale 0.1).
    """

    Config = LSTMConfig
    config: LSTMConfig

    def __init__(self, config: LSTMConfig | None = None):
        super().__init__(dataclasses.replace(config) if config is not None else LSTMConfig())
        sizes = [num_features(self.config.features)] + [self.config.hidden_size] * self.config.num_layers
        self.cells = nn.ModuleList(nn.LSTMCell(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.readout = nn.Linear(self.config.hidden_size, 1)
        self._spare: list[Tensor] | None = None  # the in-place step's second set of state tensors (see step_in_place)

    @override
    def __getstate__(self) -> dict:
        # copies and pickles go without the spare state: it holds nothing between steps
        return {**super().__getstate__(), "_spare": None}

    def forward(self, features: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """One step for every row.

        Args:
            features: ``(N, F)`` preprocessed gradients.
            state: the rows' recurrent state.

        Returns:
            ``(update (N,), new_state)``.
        """
        x = features
        new_state: list[Tensor] = []
        for index, cell in enumerate(self.cells):
            h, c = cell(x, (state[2 * index], state[2 * index + 1]))
            new_state += [h, c]
            x = h
        update = self.readout(x).squeeze(-1) * self.config.output_scale
        return update, tuple(new_state)

    @property
    @override
    def separable(self) -> bool:
        """True: the LSTM and its preprocessing are coordinatewise."""
        return True

    @override
    def init_state(self, param: Tensor) -> ParamState:
        return {"hidden": pack_state(initial_state(self, param.numel(), device=param.device))}

    @override
    def join(self, pieces: Sequence[ParamState]) -> LSTMState:
        dtype = self.dtype
        return cat_states([unpack_state(piece["hidden"].to(dtype)) for piece in pieces])

    @override
    def split(self, state: LSTMState, params: Sequence[Tensor]) -> list[ParamState]:
        return [{"hidden": hidden} for hidden in pack_state(state).split([p.numel() for p in params])]

    @override
    def step(self, grads: Tensor, state: LSTMState, params: Sequence[Tensor] = ()) -> tuple[Tensor, LSTMState]:
        cfg = self.config
        features = preprocess(grads, cfg.features, p=cfg.p, scale=cfg.input_scale)
        if plain_tensors():  # the drop-in step: in cache-sized blocks of coordinates, biases folded
            return self._blocked_step(features, state)
        return self(features, state)

    @override
    def step_in_place(
        self,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        state: LSTMState,
        options: Sequence[tuple[float, float]],
        compile: bool = False,
    ) -> bool | None:
        """The drop-in step with the new state written into a second set of state tensors kept between steps.

        A fresh ``(N, H)`` state at every step costs more than its arithmetic at a million coordinates (the allocator
        maps it anew and each page faults on its first write). Here the blocked step writes into the spare set; once
        the update is finite the two sets swap storages (``state``'s tensors then hold the new state, the old one is
        the next step's spare) and the parameters move as the shell moves them. With ``compile`` each block's layers
        run as one function compiled by ``torch.compile`` (:func:`_compiled_block`: the products, and every gate's
        elementwise work fused into loops around them; the same maths, so the same updates to float rounding); where
        compilation fails the eager blocks run, with one warning. Returns None (the shell's path) if two of
        ``state``'s tensors share memory.
        """
        if len({part.data_ptr() for part in state}) < len(state):
            return None
        cfg = self.config
        flat = _flatten_dense_tensors(list(grads)).to(self.dtype)
        features = preprocess(flat, cfg.features, p=cfg.p, scale=cfg.input_scale)
        spare = self._spare
        if spare is None or any(a.shape != b.shape or a.dtype != b.dtype or a.device != b.device
                                for a, b in zip(spare, state)):  # fmt: skip
            spare = [torch.empty_like(part) for part in state]
        update = None
        if compile and features.device.type == "cpu":
            update = self._compiled_step(features, state, spare)
        if update is None:
            update, _ = self._blocked_step(features, state, out=spare)
        if not finite(update):
            self._spare = spare
            return False
        old = [_alias(part) for part in state]  # their storages
        for part, new in zip(state, spare):
            part.set_(new.untyped_storage(), new.storage_offset(), new.shape, new.stride())
        self._spare = old
        apply_update(params, update, options)
        return True

    def _blocked_step(
        self, features: Tensor, state: LSTMState, out: Sequence[Tensor] | None = None
    ) -> tuple[Tensor, LSTMState]:
        """:meth:`forward` without autograd, ``_BLOCK`` coordinates at a time, row-major as the state.

        A layer's gates are one product ``[x, h, 1] @ [W_ih | W_hh | b_ih + b_hh]^T`` (the biases folded in) on a
        block of coordinates, with the state's rows read and written where they lie (no transposed copies). Every
        nonlinearity is a sigmoid, one pass over all the gates: the cell gate's weights are multiplied by -2, so
        ``tanh(z) = 1 - 2 sigmoid(-2 z)`` comes out of the same pass, and the squashed cell is ``1 - 2 sigmoid(-2 c)``,
        each folded into a multiply-add (on a CPU ``tanh`` costs several times a ``sigmoid``; the identity costs a
        rounding of the float's size). The new state is written once, in place of the ``(N, 4H)`` gates and the
        ``(N, H)`` intermediates of :meth:`forward`, into ``out`` if given (tensors shaped as ``state``'s, not sharing
        its memory).
        """
        num, num_features = features.shape
        hidden = self.config.hidden_size
        weights, readout = self._folded_weights(features.dtype)
        new_state = list(out) if out is not None else [torch.empty_like(part) for part in state]
        update = features.new_empty(num)
        block = min(_BLOCK if features.device.type == "cpu" else _DEVICE_BLOCK, num)
        sources = [features.new_empty(block, w.shape[0]) for w in weights] + [features.new_empty(block, hidden + 1)]
        for source in sources:
            source[:, -1].fill_(1.0)
        gates = features.new_empty(block, 4 * hidden)
        squashed = features.new_empty(block, hidden)
        for start in range(0, num, block):
            stop = min(start + block, num)
            rows = stop - start  # the last block may be shorter: the first rows of the buffers
            sources[0][:rows, :num_features].copy_(features[start:stop])
            for index, weight in enumerate(weights):
                source, target = sources[index][:rows], sources[index + 1][:rows]
                width = source.shape[1] - hidden - 1
                source[:, width:-1].copy_(state[2 * index][start:stop])
                block_gates = torch.mm(source, weight, out=gates[:rows]).sigmoid_()
                in_gate, forget_gate, out_gate, cell_gate = block_gates.split(hidden, dim=1)  # the last: s(-2 z)
                h, c = new_state[2 * index][start:stop], new_state[2 * index + 1][start:stop]
                torch.addcmul(in_gate, forget_gate, state[2 * index + 1][start:stop], out=c)
                c.addcmul_(in_gate, cell_gate, value=-2.0)  # c = f c + i tanh(z), tanh(z) = 1 - 2 s(-2 z)
                squashed_cell = torch.mul(c, -2.0, out=squashed[:rows]).sigmoid_()
                target[:, :hidden].copy_(torch.addcmul(out_gate, out_gate, squashed_cell, value=-2.0, out=h))
            torch.mv(sources[-1][:rows], readout, out=update[start:stop])
        return update.mul_(self.config.output_scale), tuple(new_state)

    def _compiled_step(self, features: Tensor, state: LSTMState, out: Sequence[Tensor]) -> Tensor | None:
        """:meth:`_blocked_step` with each block's layers in the compiled :func:`_block` (None where it cannot compile).

        The blocks are ``_COMPILED_BLOCK`` coordinates (the last one shorter: a second compiled shape).
        """
        kernel = _compiled_block(self.config.num_layers)
        if kernel is None:
            return None
        weights, readout = self._folded_weights(features.dtype)
        num = features.shape[0]
        update = features.new_empty(num)
        scale = features.new_tensor(self.config.output_scale)
        try:
            for start in range(0, num, _COMPILED_BLOCK):
                stop = min(start + _COMPILED_BLOCK, num)
                kernel(
                    features[start:stop], [part[start:stop] for part in state], [part[start:stop] for part in out],
                    update[start:stop], weights, readout, scale,
                )  # fmt: skip
        except Exception as error:  # noqa: BLE001 -- any compiler failure: the eager step, said once
            _FAILED_COMPILE.append(True)
            warn_compile_unavailable("lstm", error, _WARNED, stacklevel=3)
            return None
        return update

    def _folded_weights(self, dtype: torch.dtype) -> tuple[list[Tensor], Tensor]:
        """Each layer's ``[W_ih | W_hh | b_ih + b_hh]^T`` ``(F + H + 1, 4H)`` and the readout ``[w, b]``, in ``dtype``.

        The gate columns are ordered i, f, o, g, the cell gate's times -2 (its tanh comes from a sigmoid). Built at
        every step (a few thousand floats): a cache keyed on the weights' versions would miss a change made through
        ``.data`` (as ``vector_to_parameters`` and ES perturbations do).
        """
        hidden = self.config.hidden_size
        weights = []
        for cell in self.cells:
            assert isinstance(cell, nn.LSTMCell)
            folded = torch.cat([cell.weight_ih, cell.weight_hh, (cell.bias_ih + cell.bias_hh)[:, None]], dim=1)
            i_f, cell_gate, out_gate = folded.split([2 * hidden, hidden, hidden])
            weights.append(torch.cat([i_f, out_gate, -2 * cell_gate]).t().contiguous().to(dtype))
        return weights, torch.cat([self.readout.weight[0], self.readout.bias]).to(dtype)


def _alias(tensor: Tensor) -> Tensor:
    """A new tensor object over ``tensor``'s memory (it keeps that memory when ``tensor`` is pointed elsewhere)."""
    alias = tensor.new_empty(0)
    return alias.set_(tensor.untyped_storage(), tensor.storage_offset(), tensor.shape, tensor.stride())


def _block(
    features: Tensor,
    state: list[Tensor],
    out: list[Tensor],
    update: Tensor,
    weights: list[Tensor],
    readout: Tensor,
    scale: Tensor,
) -> None:
    """One block of :meth:`CoordinateLSTM._blocked_step` as a pure function of its rows, writing ``out`` and ``update``.

    The same maths as the eager blocks (folded weights, every nonlinearity a sigmoid), written for the compiler: each
    layer is one product with the bias row, then elementwise work it fuses into a loop over the block.
    """
    source = features
    ones = features.new_ones(features.shape[0], 1)
    for index, weight in enumerate(weights):
        h_old, c_old = state[2 * index], state[2 * index + 1]
        gates = torch.mm(torch.cat([source, h_old, ones], dim=1), weight).sigmoid()
        in_gate, forget_gate, out_gate, cell_gate = gates.chunk(4, dim=1)
        c = in_gate + forget_gate * c_old - 2.0 * in_gate * cell_gate
        h = out_gate - 2.0 * out_gate * torch.sigmoid(-2.0 * c)
        out[2 * index].copy_(h)
        out[2 * index + 1].copy_(c)
        source = h
    update.copy_(torch.mv(torch.cat([source, ones], dim=1), readout) * scale)


_COMPILED_BLOCKS: dict[int, Callable[..., None]] = {}
_FAILED_COMPILE: list[bool] = []
_WARNED: list[bool] = []


def _compiled_block(num_layers: int) -> Callable[..., None] | None:
    """The compiled :func:`_block` for ``num_layers`` layers (built on first use); None after a compiler failure.

    Each depth gets its own copy of the function's code object: ``torch.compile`` keeps its graphs per code object
    (each shape a graph, their number capped).
    """
    if _FAILED_COMPILE:
        return None
    kernel = _COMPILED_BLOCKS.get(num_layers)
    if kernel is None:
        fresh = types.FunctionType(_block.__code__.replace(), _block.__globals__, _block.__name__)
        kernel = _COMPILED_BLOCKS[num_layers] = torch.compile(fresh, fullgraph=True, dynamic=False)
    return kernel


_BLOCK = 8192
"""Coordinates per block of the drop-in step on a CPU. Row-major blocks stream through the cache; a larger block
issues fewer operations per coordinate (each layer's dozen calls are dispatched once per block): measured at 100k and
1M parameters, 8,192 is 1.3x faster than 1,024 and 32,768 slower again."""

_COMPILED_BLOCK = 32768
"""Coordinates per block of the compiled drop-in step (CPU): its fused loops keep fewer intermediates than the eager
blocks, so a larger block pays (measured at 100k parameters, one thread, against 2,048, 8,192 and 65,536)."""

_DEVICE_BLOCK = 1 << 20
"""Coordinates per block on an accelerator, where a block costs kernel launches and no cache is to be kept."""


def initial_state(net: CoordinateLSTM, rows: int, *, device: torch.device | None = None) -> LSTMState:
    """The zero recurrent state of ``rows`` coordinates, in the network's dtype."""
    weight = net.readout.weight
    zeros = torch.zeros(rows, net.config.hidden_size, dtype=weight.dtype, device=device or weight.device)
    return (zeros,) * (2 * net.config.num_layers)


def pack_state(state: LSTMState) -> Tensor:
    """One ``(N, L, 2, H)`` tensor holding ``state``."""
    return torch.stack(state, dim=1).unflatten(1, (-1, 2))


def unpack_state(packed: Tensor) -> LSTMState:
    """Inverse of :func:`pack_state` (views, no copy)."""
    return tuple(packed.flatten(1, 2).unbind(dim=1))


def cat_states(states: list[LSTMState]) -> LSTMState:
    """The states of several groups of rows as one state (rows concatenated in order)."""
    return tuple(torch.cat(parts) for parts in zip(*states))


def split_state(state: LSTMState, sizes: list[int]) -> list[LSTMState]:
    """Inverse of :func:`cat_states`: one state per group of ``sizes`` rows."""
    return list(zip(*(part.split(sizes) for part in state)))


def lstm_step(net: CoordinateLSTM, grads: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
    """``net.step(grads, state)``: gradients in, updates out, one network call for all rows.

    Args:
        net: the shared network (its dtype and device are those of ``grads`` and ``state``).
        grads: ``(N,)`` gradient coordinates (every parameter, flattened and concatenated).
        state: their recurrent state.

    Returns:
        ``(update (N,), new_state)``; the caller adds ``update`` to the parameters.
    """
    return net.step(grads, state)
