"""Model building blocks for the reference tasks, written so that ``torch.func.vmap`` can batch them over weights.

Everything here is plain ``Linear``/``Conv2d``/``Embedding`` arithmetic: no BatchNorm (DSS interpolates weights, and
running statistics are not weights) and no fused ``nn.LSTM`` (it has no vmap batching rule), hence the explicit LSTM.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "CharLSTM", "LSTMLayer", "mlp"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "identity": nn.Identity,  # a deep linear network (DSS paper, Section 2.2)
}


def mlp(
    sizes: list[int],
    activation: str = "sigmoid",
    *,
    bias: bool = True,
    output_activation: str | None = None,
) -> nn.Sequential:
    """A fully connected network ``sizes[0] -> ... -> sizes[-1]`` with ``activation`` between layers.

    Args:
        sizes: layer widths including input and output, e.g. ``[64, 20, 10]``.
        activation: hidden non-linearity, one of :data:`ACTIVATIONS`.
        bias: whether the linear layers have biases.
        output_activation: optional non-linearity after the last layer.
    """
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out, bias=bias))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    if output_activation is not None:
        layers.append(ACTIVATIONS[output_activation]())
    return nn.Sequential(*layers)


class LSTMLayer(nn.Module):
    """One LSTM layer (gates i, f, g, o as in ``torch.nn.LSTM``), unrolled in Python so vmap can batch it.

    Args:
        input_size: features per time step.
        hidden_size: units.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for weight in (self.weight_ih, self.weight_hh, self.bias):
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, T, input_size) -> (B, T, hidden_size)``, starting from zero state."""
        batch, steps, _ = x.shape
        projected = x @ self.weight_ih.T + self.bias  # all time steps at once; only the recurrence loops
        h = x.new_zeros(batch, self.hidden_size)
        c = x.new_zeros(batch, self.hidden_size)
        outputs = []
        for t in range(steps):
            gates = projected[:, t] + h @ self.weight_hh.T
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class CharLSTM(nn.Module):
    """Token-level LSTM language model: embedding, stacked :class:`LSTMLayer`, linear read-out to the vocabulary.

    Args:
        vocab_size: number of tokens.
        embed_size: embedding width.
        hidden_size: LSTM units per layer.
        num_layers: stacked LSTM layers.
    """

    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        sizes = [embed_size] + [hidden_size] * num_layers
        self.layers = nn.ModuleList(LSTMLayer(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens: (B, T) long -> logits (B, T, vocab_size)``."""
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)
