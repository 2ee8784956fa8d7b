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
  shape (r, c...) row and column accumulators of g^2 (one vector each per tensor, a few floats) estimate
  ``v_ij = row_i col_j / mean(row)``; for a vector parameter it is ``g * rsqrt(v)``;
* training progress: ``tanh(t / s)`` for each time scale s of ``time_scales`` (learned_optimization's step features).

With ``normalize`` (the default) every feature but the progress ones is divided by its root mean square over the
coordinates of its tensor, so the MLP sees inputs of unit scale on any model (small_fc_lopt's second-moment
normalisation). State per coordinate: ``len(momentum_decays) + 1`` floats (4 by default), plus the factored row and
column vectors and one step counter per tensor.
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
from metaopt.rules.base import LearnedRule, ParamState

__all__ = ["MLPConfig", "PerParameterMLP", "adam_weights"]

_EPS = 1e-8


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
        self._layouts: dict[tuple, _Layout] = {}  # per parameter layout: sizes, segment ids, constants

    # -- state ----------------------------------------------------------------------------------------------------

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
    def join(self, pieces: Sequence[ParamState]) -> dict[str, object]:
        dtype = self.dtype
        return {
            "momenta": torch.cat([p["momenta"].to(dtype) for p in pieces]),
            "second_moment": torch.cat([p["second_moment"].to(dtype) for p in pieces]),
            "rows": [p["row"].to(dtype) for p in pieces],
            "cols": [p["col"].to(dtype) for p in pieces],
            "steps": torch.cat([p["step"].to(dtype) for p in pieces]),
        }

    @override
    def split(self, state: dict, params: Sequence[Tensor]) -> list[ParamState]:
        sizes = [p.numel() for p in params]
        momenta, second = state["momenta"].split(sizes), state["second_moment"].split(sizes)
        return [
            {"momenta": m, "second_moment": v, "row": r, "col": c, "step": s.reshape(1)}
            for m, v, r, c, s in zip(momenta, second, state["rows"], state["cols"], state["steps"].unbind())
        ]

    # -- the step -------------------------------------------------------------------------------------------------

    def features(self, grads: Tensor, state: dict, params: Sequence[Tensor]) -> tuple[Tensor, dict]:
        """``(features (N, F), new_state)`` for every coordinate."""
        cfg = self.config
        layout = self._layout(params, grads)
        b2 = cfg.second_moment_decay
        steps = state["steps"] + 1  # (T,): one counter per tensor
        momenta = layout.decays * state["momenta"] + (1 - layout.decays) * grads.unsqueeze(1)
        second = b2 * state["second_moment"] + (1 - b2) * grads * grads
        b1 = float(cfg.momentum_decays[cfg.adam_momentum])
        per_tensor = torch.stack([1 - b1**steps, 1 - b2**steps, steps], dim=1)  # bias corrections and t, (T, 3)
        correction1, correction2, t = layout.expand(per_tensor).unbind(1)
        v_hat = second / correction2
        adam = (momenta[:, cfg.adam_momentum] / correction1) / (v_hat.sqrt() + cfg.eps)
        rsqrt = torch.rsqrt(v_hat + _EPS**2)
        values = torch.cat([p.reshape(-1) for p in params]).to(grads.dtype)
        factored, rows, cols = self._factored(grads, state, params, layout.sizes, steps, grads * rsqrt)
        raw = torch.cat(
            [grads[:, None], values[:, None], momenta, momenta * rsqrt[:, None], rsqrt[:, None], adam[:, None],
             factored[:, None]],
            dim=1,
        )  # fmt: skip
        if cfg.normalize:
            raw = raw / layout.rms(raw)
        progress = torch.tanh(t[:, None] / layout.scales)
        new_state = {"momenta": momenta, "second_moment": second, "rows": rows, "cols": cols, "steps": steps}
        return torch.cat([raw, progress], dim=1), new_state

    def _layout(self, params: Sequence[Tensor], grads: Tensor) -> _Layout:
        key = (tuple(p.numel() for p in params), grads.dtype, grads.device)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = _Layout(list(key[0]), self.config, grads.dtype, grads.device)
        return layout

    @override
    def step(self, grads: Tensor, state: dict, params: Sequence[Tensor]) -> tuple[Tensor, dict]:
        cfg = self.config
        inputs, new_state = self.features(grads, state, params)
        out = self.readout(self.hidden(inputs))
        direction, magnitude = out[:, 0], out[:, 1]
        return direction * torch.exp(magnitude * cfg.exp_mult) * cfg.step_mult, new_state

    def _factored(
        self, grads: Tensor, state: dict, params: Sequence[Tensor], sizes: list[int], steps: Tensor, unfactored: Tensor
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Gradients over the factored second moment (``unfactored`` for vectors), and the new accumulators.

        One loop over the tensors: each has its own matrix shape.
        """
        b2 = self.config.second_moment_decay
        pieces, rows, cols = [], [], []
        for g, fallback, row, col, p, step in zip(grads.split(sizes), unfactored.split(sizes), state["rows"],
                                                  state["cols"], params, steps.unbind()):  # fmt: skip
            r, c = _factored_shape(p)
            if c == 0:  # a vector or scalar: the unfactored second moment
                pieces.append(fallback)
                rows.append(row)
                cols.append(col)
                continue
            g2 = g.reshape(r, c) ** 2 + _EPS**2
            new_row = b2 * row + (1 - b2) * g2.mean(dim=1)
            new_col = b2 * col + (1 - b2) * g2.mean(dim=0)
            v = torch.outer(new_row, new_col) / (new_row.mean() * (1 - b2**step))
            pieces.append((g.reshape(r, c) * torch.rsqrt(v)).reshape(-1))
            rows.append(new_row)
            cols.append(new_col)
        return (torch.cat(pieces) if pieces else unfactored), rows, cols


def _factored_shape(param: Tensor) -> tuple[int, int]:
    """(rows, cols) of a parameter's factored moment: (shape[0], prod(shape[1:])), or (0, 0) for vectors."""
    if param.dim() < 2:
        return 0, 0
    return int(param.shape[0]), int(math.prod(param.shape[1:]))


class _Layout:
    """What a step needs about a list of parameter sizes, computed once: segment ids and the constant tensors."""

    def __init__(self, sizes: list[int], config: MLPConfig, dtype: torch.dtype, device: torch.device):
        self.sizes = sizes
        self.repeats = torch.tensor(sizes, device=device)
        self.ids = torch.repeat_interleave(torch.arange(len(sizes), device=device), self.repeats)
        self.counts = torch.tensor(sizes, dtype=dtype, device=device).unsqueeze(1)
        self.decays = torch.tensor(config.momentum_decays, dtype=dtype, device=device)  # exact in float64
        self.scales = torch.tensor(config.time_scales, dtype=dtype, device=device)

    def expand(self, per_tensor: Tensor) -> Tensor:
        """``(N, ...)``: each tensor's row repeated for its coordinates."""
        return per_tensor[self.ids]

    def rms(self, features: Tensor) -> Tensor:
        """``(N, F)``: each coordinate's root mean square of each feature over the coordinates of its tensor."""
        sums = features.new_zeros(len(self.sizes), features.shape[1]).index_add(0, self.ids, features * features)
        return torch.sqrt(sums / self.counts + 1e-12)[self.ids]


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
