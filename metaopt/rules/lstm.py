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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from typing_extensions import override

from envs.tooling.config import check_range
from metaopt.rules.base import LearnedRule, ParamState, plain_tensors
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

    def _blocked_step(self, features: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """:meth:`forward` without autograd, ``_BLOCK`` coordinates at a time, feature-major inside a block.

        A layer's gates are one product ``[W_ih | W_hh | b_ih + b_hh] @ [x; h; 1]`` (the biases folded in) on a
        block whose inputs, gates and outputs stay in the cache; its rows are ordered input, forget, output, cell
        gate, so the three sigmoids are one contiguous pass and the tanh another. The new ``h`` of a layer is
        written straight into the next layer's input rows, and every new state tensor is written once, in place of
        the ``(N, 4H)`` gates and the ``(N, H)`` intermediates of :meth:`forward`.
        """
        num, num_features = features.shape
        hidden = self.config.hidden_size
        weights, readout = self._folded_weights(features.dtype)
        new_state = [torch.empty_like(part) for part in state]
        update = features.new_empty(num)
        block = min(_BLOCK if features.device.type == "cpu" else _DEVICE_BLOCK, num)
        sources = [features.new_empty(w.shape[1], block) for w in weights] + [features.new_empty(hidden + 1, block)]
        for source in sources:
            source[-1].fill_(1.0)
        gates = features.new_empty(4 * hidden, block)
        cell = features.new_empty(hidden, block)
        squashed = features.new_empty(hidden, block)
        for start in range(0, num, block):
            stop = min(start + block, num)
            if stop - start < block:  # the last, shorter block: buffers of its width
                block = stop - start
                sources = [source[:, :block].clone() for source in sources]
                gates, cell, squashed = (buffer[:, :block].clone() for buffer in (gates, cell, squashed))
            sources[0][:num_features].copy_(features[start:stop].t())
            for index, weight in enumerate(weights):
                source, target = sources[index], sources[index + 1]
                width = source.shape[0] - hidden - 1
                source[width:-1].copy_(state[2 * index][start:stop].t())
                torch.mm(weight, source, out=gates)
                gates[: 3 * hidden].sigmoid_()
                gates[3 * hidden :].tanh_()
                in_gate, forget_gate, out_gate, cell_gate = gates.split(hidden)
                torch.mul(forget_gate, state[2 * index + 1][start:stop].t(), out=cell)
                cell.add_(in_gate.mul_(cell_gate))
                new_state[2 * index + 1][start:stop].t().copy_(cell)
                torch.mul(out_gate, torch.tanh(cell, out=squashed), out=target[:hidden])
                new_state[2 * index][start:stop].t().copy_(target[:hidden])
            torch.mv(sources[-1].t(), readout, out=update[start:stop])
        return update.mul_(self.config.output_scale), tuple(new_state)

    def _folded_weights(self, dtype: torch.dtype) -> tuple[list[Tensor], Tensor]:
        """Each layer's ``[W_ih | W_hh | b_ih + b_hh]`` ``(4H, F + H + 1)`` and the readout's ``[w, b]``, in ``dtype``.

        The gate rows are ordered i, f, o, g. Built at every step (a few thousand floats): a cache keyed on the
        weights' versions would miss a change made through ``.data`` (as ``vector_to_parameters`` and ES
        perturbations do).
        """
        hidden = self.config.hidden_size
        weights = []
        for cell in self.cells:
            assert isinstance(cell, nn.LSTMCell)
            folded = torch.cat([cell.weight_ih, cell.weight_hh, (cell.bias_ih + cell.bias_hh)[:, None]], dim=1)
            i_f, cell_gate, out_gate = folded.split([2 * hidden, hidden, hidden])
            weights.append(torch.cat([i_f, out_gate, cell_gate]).to(dtype))
        return weights, torch.cat([self.readout.weight[0], self.readout.bias]).to(dtype)


_BLOCK = 1024
"""Coordinates per block of the drop-in step: a layer's inputs and gates, (F + 7H + 1) * _BLOCK floats, stay cached."""

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
