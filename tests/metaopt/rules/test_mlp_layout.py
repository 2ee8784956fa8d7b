"""The flat step of the ``mlp`` rule computes what its module docstring defines, on every mix of tensor shapes.

The factored feature equals Adafactor's per-tensor formula (one tensor at a time, as the definition reads), the
features through the MLP give the step's update, and the dense and the segment-sum paths of the per-tensor means agree.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from metaopt.rules import MLPConfig, PerParameterMLP
from metaopt.rules import mlp as mlp_module

SHAPES = {
    "matrices and vectors": [(3, 2, 2, 2), (3,), (4, 12), (4,), (), (1, 4)],
    "matrices only": [(5, 3), (2, 5)],
    "vectors only": [(6,), (2,)],
}
EPS = 1e-8


def _params(shapes: list[tuple[int, ...]]) -> list[Tensor]:
    torch.manual_seed(0)
    return [torch.randn(shape, dtype=torch.float64) for shape in shapes]


def _factored_by_definition(
    grads: list[Tensor], seconds: list[Tensor], accumulators: list[tuple[Tensor, Tensor]], step: int, b2: float
) -> Tensor:
    """g / sqrt(row_i col_j / (mean(row) (1 - b2^t))) per matrix, g / sqrt(v_hat + eps^2) per vector; updates state."""
    pieces = []
    for index, (g, v) in enumerate(zip(grads, seconds)):
        if g.dim() < 2:
            pieces.append((g * torch.rsqrt(v / (1 - b2**step) + EPS**2)).reshape(-1))
            continue
        g2 = g.reshape(g.shape[0], -1) ** 2 + EPS**2
        row, col = accumulators[index]
        row = b2 * row + (1 - b2) * g2.mean(dim=1)
        col = b2 * col + (1 - b2) * g2.mean(dim=0)
        accumulators[index] = (row, col)
        estimate = torch.outer(row, col) / (row.mean() * (1 - b2**step))
        pieces.append((g.reshape(g2.shape) * torch.rsqrt(estimate)).reshape(-1))
    return torch.cat(pieces)


@pytest.mark.parametrize("shapes", SHAPES.values(), ids=SHAPES.keys())
def test_the_factored_feature_is_adafactors_estimate_tensor_by_tensor(shapes: list[tuple[int, ...]]) -> None:
    rule = PerParameterMLP(MLPConfig(normalize=False)).double()
    params = _params(shapes)
    state = rule.join([rule.init_state(p) for p in params])
    b2 = rule.config.second_moment_decay
    seconds = [torch.zeros_like(p) for p in params]
    accumulators = [
        (torch.zeros(p.shape[0], dtype=p.dtype), torch.zeros(math.prod(p.shape[1:]), dtype=p.dtype)) if p.dim() > 1
        else (torch.zeros(0, dtype=p.dtype), torch.zeros(0, dtype=p.dtype))
        for p in params
    ]  # fmt: skip
    column = 2 + 2 * len(rule.config.momentum_decays) + 2
    for step in range(1, 4):
        grads = [torch.randn_like(p) * 10.0**step for p in params]
        seconds = [b2 * v + (1 - b2) * g * g for v, g in zip(seconds, grads)]
        features, state = rule.features(torch.cat([g.reshape(-1) for g in grads]), state, params)
        expected = _factored_by_definition(grads, seconds, accumulators, step, b2)
        torch.testing.assert_close(features[:, column], expected, rtol=1e-12, atol=0)
    assert features.shape == (sum(p.numel() for p in params), rule.config.num_features)
    for piece, (row, col) in zip(rule.split(state, params), accumulators):
        torch.testing.assert_close(piece["row"], row, rtol=1e-12, atol=0)
        torch.testing.assert_close(piece["col"], col, rtol=1e-12, atol=0)


def _run(rule: PerParameterMLP, params: list[Tensor], steps: int = 3) -> tuple[list[Tensor], list[Tensor]]:
    """Updates of ``steps`` calls of ``rule.step`` on fixed random gradients, and the features of each."""
    torch.manual_seed(1)
    state = rule.join([rule.init_state(p) for p in params])
    updates, features = [], []
    for _ in range(steps):
        grads = torch.randn(sum(p.numel() for p in params), dtype=torch.float64)
        features.append(rule.features(grads, state, params)[0])
        update, state = rule.step(grads, state, params)
        updates.append(update)
    return updates, features


@pytest.mark.parametrize("shapes", SHAPES.values(), ids=SHAPES.keys())
def test_the_features_through_the_mlp_are_the_step(shapes: list[tuple[int, ...]]) -> None:
    torch.manual_seed(2)
    rule = PerParameterMLP().double()
    with torch.no_grad():
        rule.readout.weight.mul_(300)
    updates, features = _run(rule, _params(shapes))
    for update, inputs in zip(updates, features):
        direction, magnitude = rule.readout(rule.hidden(inputs)).unbind(1)
        expected = direction * torch.exp(magnitude * rule.config.exp_mult) * rule.config.step_mult
        torch.testing.assert_close(update, expected, rtol=1e-12, atol=1e-18)
        assert update.abs().max() > 0


@pytest.mark.parametrize("shapes", SHAPES.values(), ids=SHAPES.keys())
def test_the_dense_and_the_segment_means_agree(shapes: list[tuple[int, ...]], monkeypatch: pytest.MonkeyPatch) -> None:
    params = _params(shapes)
    torch.manual_seed(3)
    dense = PerParameterMLP().double()
    expected, _ = _run(dense, params)
    monkeypatch.setattr(mlp_module, "_DENSE_AVERAGE_LIMIT", 0)
    sparse = PerParameterMLP().double()
    sparse.load_state_dict(dense.state_dict())
    found, _ = _run(sparse, params)
    layout = next(iter(sparse._layouts.values()))
    assert layout.averager is None and (layout.factored is None or layout.factored.row_averager is None)
    for a, b in zip(found, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-18)
