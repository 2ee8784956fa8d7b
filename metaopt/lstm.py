"""The coordinatewise LSTM optimizer network (Andrychowicz et al. 2016, section 2.1 and Figure 3).

One small two-layer LSTM is shared by every coordinate of every parameter: each coordinate is a row of one batch, with
its own hidden state, and the network maps the preprocessed gradient of that coordinate to its update. Rows never
interact, so the update of a coordinate does not depend on how parameters are grouped into tensors, and the whole
model is updated with a single batched call per step (:func:`lstm_step`), whatever its number of tensors.

Shapes: ``N`` coordinates, ``F`` features per coordinate, ``L`` layers of ``H`` units; the recurrent state of all
coordinates is one tensor ``(N, L, 2, H)`` holding ``(h, c)`` for each layer, so it can be concatenated over
parameters and split back along its first dimension.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metaopt.features import FEATURE_MODES, num_features, preprocess

__all__ = ["CoordinateLSTM", "LSTMConfig", "initial_state", "lstm_step"]


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
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be positive, got {self.hidden_size}, {self.num_layers}")


class CoordinateLSTM(nn.Module):
    """Stacked ``nn.LSTMCell`` layers and a linear read-out, applied to every coordinate as a row of one batch.

    Args:
        config: the architecture; default the paper's (log_sign features, 2 x 20 units, output scale 0.1).
    """

    def __init__(self, config: LSTMConfig | None = None):
        super().__init__()
        self.config = dataclasses.replace(config) if config is not None else LSTMConfig()
        sizes = [num_features(self.config.features)] + [self.config.hidden_size] * self.config.num_layers
        self.cells = nn.ModuleList(nn.LSTMCell(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.readout = nn.Linear(self.config.hidden_size, 1)

    def forward(self, features: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step for every row.

        Args:
            features: ``(N, F)`` preprocessed gradients.
            state: ``(N, L, 2, H)`` recurrent state.

        Returns:
            ``(update (N,), new_state (N, L, 2, H))``.
        """
        x = features
        layers = []
        for index, cell in enumerate(self.cells):
            h, c = cell(x, (state[:, index, 0], state[:, index, 1]))
            layers.append(torch.stack((h, c), dim=1))
            x = h
        update = self.readout(x).squeeze(-1) * self.config.output_scale
        return update, torch.stack(layers, dim=1)


def initial_state(net: CoordinateLSTM, rows: int, *, device: torch.device | None = None) -> Tensor:
    """The zero recurrent state of ``rows`` coordinates: ``(rows, L, 2, H)`` in the network's dtype."""
    weight = net.readout.weight
    shape = (rows, net.config.num_layers, 2, net.config.hidden_size)
    return torch.zeros(shape, dtype=weight.dtype, device=device or weight.device)


def lstm_step(net: CoordinateLSTM, grads: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """The functional core of both optimizer shells: gradients in, updates out, one network call for all rows.

    Args:
        net: the shared network (its dtype and device are those of ``grads`` and ``state``).
        grads: ``(N,)`` gradient coordinates (every parameter, flattened and concatenated).
        state: ``(N, L, 2, H)`` their recurrent state.

    Returns:
        ``(update (N,), new_state)``; the caller adds ``update`` to the parameters.
    """
    cfg = net.config
    features = preprocess(grads, cfg.features, p=cfg.p, scale=cfg.input_scale)
    return net(features, state)
