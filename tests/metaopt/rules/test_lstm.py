"""The LSTM rule: the paper's gradient features, and a state that splits per parameter and joins back exactly."""

from __future__ import annotations

import math

import torch

from metaopt import CoordinateLSTM, LSTMConfig, lstm_step
from metaopt.rules import list_rules, make_rule
from metaopt.rules.features import log_sign


def test_log_sign_features_follow_the_paper() -> None:
    g = torch.tensor([2.0, -1e-3, 1e-6, -1e-5, 0.0], dtype=torch.float64)
    features = log_sign(g, p=10.0)
    big = g.abs() >= math.exp(-10)
    assert torch.allclose(features[big, 0], g[big].abs().log() / 10)
    assert torch.equal(features[big, 1], g[big].sign())
    assert torch.equal(features[~big, 0], torch.full_like(g[~big], -1.0))
    assert torch.allclose(features[~big, 1], g[~big] * math.exp(10))
    g.requires_grad_(True)
    log_sign(g).sum().backward()
    assert torch.isfinite(g.grad).all()  # the zero gradient coordinate does not poison the backward pass


def test_state_splits_per_parameter_and_joins_back_exactly() -> None:
    torch.manual_seed(0)
    net = make_rule("lstm", {"hidden_size": 3, "num_layers": 2})
    assert isinstance(net, CoordinateLSTM) and "lstm" in list_rules()
    params = [torch.zeros(2, 3), torch.zeros(4)]
    pieces = [net.init_state(p) for p in params]
    assert [piece["hidden"].shape for piece in pieces] == [(6, 2, 2, 3), (4, 2, 2, 3)]
    state = net.join(pieces)
    assert len(state) == 4 and all(part.shape == (10, 3) and not part.any() for part in state)
    grads = torch.randn(10)
    update, new_state = net.step(grads, state, params)
    reference, reference_state = lstm_step(net, grads, state)
    assert torch.equal(update, reference) and all(torch.equal(a, b) for a, b in zip(new_state, reference_state))
    again = net.join(net.split(new_state, params))
    assert all(torch.equal(a, b) for a, b in zip(again, new_state))


def test_the_config_is_copied_not_shared() -> None:
    config = LSTMConfig(hidden_size=5)
    net = CoordinateLSTM(config)
    config.hidden_size = 7
    assert net.config.hidden_size == 5 and net.dtype == torch.float32
