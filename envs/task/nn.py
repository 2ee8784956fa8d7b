"""Model building blocks for the reference tasks, written so that ``torch.func.vmap`` can batch them over weights.

Everything here is plain ``Linear``/``Conv2d``/``Embedding`` arithmetic: no BatchNorm (DSS interpolates weights, and
running statistics are not weights) and no fused ``nn.LSTM`` (it has no vmap batching rule), hence the explicit LSTM.
The transformer's attention is written out (scores, causal mask, softmax) for the same reason: every operation has a
vmap rule.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "CausalSelfAttention", "CharLSTM", "CharTransformer", "LSTMLayer", "TransformerBlock", "mlp"]

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


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions 0..t only.

    Args:
        width: model width (divisible by ``heads``).
        heads: attention heads.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, T, width) -> (B, T, width)``."""
        batch, steps, width = x.shape
        head = width // self.heads
        q, k, v = self.qkv(x).view(batch, steps, 3, self.heads, head).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q @ k.transpose(-2, -1)) * head**-0.5  # (B, heads, T, T)
        future = torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(1)
        attention = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(batch, steps, width))


class TransformerBlock(nn.Module):
    """A pre-norm transformer block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))`` (GELU, ``mlp_ratio`` x)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, T, width) -> (B, T, width)``."""
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CharTransformer(nn.Module):
    """Decoder-only transformer in GPT-2's layout: token and position embeddings, pre-norm blocks, norm, readout.

    The token and the learned position embeddings are rows of one table, ``(vocab_size + context, width)``: tokens
    first, then positions 0 .. context - 1 (GPT-2's two tables stacked), so the model's first parameter is its whole
    embedding and its last the readout, as in :class:`CharLSTM`; optimizers that treat the first and last matrix apart
    (Muon's and the learned rules' ``hidden`` options) keep both embeddings out of the hidden matrices. GPT-2's
    initialisation: the table and the linear layers' weights from N(0, 0.02^2), the two projections back into the
    residual stream (attention output, second MLP layer) scaled by ``1 / sqrt(2 num_layers)``, biases 0, norms at
    gain 1.

    Args:
        vocab_size: number of tokens.
        width: model width.
        heads: attention heads per block.
        num_layers: blocks.
        context: the longest sequence (positions with an embedding).
        mlp_ratio: hidden units of each block's MLP per unit of width.
    """

    def __init__(self, vocab_size: int, width: int, heads: int, num_layers: int, context: int, mlp_ratio: int = 4):
        super().__init__()
        self.vocab_size, self.context = vocab_size, context
        self.embed = nn.Embedding(vocab_size + context, width)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio) for _ in range(num_layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)
        for name, parameter in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(parameter)
            elif parameter.dim() >= 2:
                residual = name.endswith(("attention.proj.weight", "mlp.2.weight"))
                nn.init.normal_(parameter, std=0.02 / math.sqrt(2 * num_layers) if residual else 0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens: (B, T) long, T <= context -> logits (B, T, vocab_size)``."""
        steps = tokens.shape[-1]
        if steps > self.context:
            raise ValueError(f"a sequence of {steps} tokens is longer than the context of {self.context}")
        x = self.embed(tokens) + self.embed.weight[self.vocab_size : self.vocab_size + steps]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
