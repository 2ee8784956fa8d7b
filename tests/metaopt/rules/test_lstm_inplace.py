"""The LSTM rule's drop-in step in place: the functional step's updates, two state sets that swap, the NaN guard."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

from metaopt import CoordinateLSTM, LearnedOptimizer, LSTMConfig
from metaopt.rules import lstm as lstm_module
from metaopt.rules.lstm import initial_state

GROUPS = ((0.7, 0.0), (1.3, 0.2))
"""(lr, weight_decay) of the two parameter groups."""


def _net() -> CoordinateLSTM:
    torch.manual_seed(1)
    net = CoordinateLSTM(LSTMConfig()).double()
    with torch.no_grad():  # weights of a trained rule's scale, so the nonlinearities are exercised
        for weight in net.parameters():
            weight.normal_(0, 0.5)
    return net


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(40, 200), nn.Tanh(), nn.Linear(200, 3)).double()  # 8,803 coordinates: two blocks


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 40, generator=g, dtype=torch.float64)
    return ((model(x) - torch.randn(16, 3, generator=g, dtype=torch.float64)) ** 2).mean()


def _optimizer(model: nn.Module, net: CoordinateLSTM) -> LearnedOptimizer:
    params = list(model.parameters())
    groups = [params[:2], params[2:]]
    assert sum(p.numel() for p in params) > lstm_module._BLOCK
    return LearnedOptimizer(
        [{"params": group, "lr": lr, "weight_decay": wd} for group, (lr, wd) in zip(groups, GROUPS)], net=net
    )


def _reference(steps: int) -> list[torch.Tensor]:
    """The parameters after each step, from the functional step with autograd on (the unblocked path)."""
    net, model = _net(), _model()
    params = list(model.parameters())
    options = [GROUPS[0]] * 2 + [GROUPS[1]] * 2
    state = net.join([net.init_state(p) for p in params])
    trajectory = []
    for step in range(steps):
        model.zero_grad()
        _loss(model, step).backward()
        flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
        update, state = net.step(flat, state, params)  # autograd on: the plain batched forward
        with torch.no_grad():
            for p, delta, (lr, wd) in zip(params, update.detach().split([p.numel() for p in params]), options):
                p.mul_(1 - lr * wd).add_(delta.view_as(p), alpha=lr)
        state = tuple(part.detach() for part in state)
        trajectory.append(torch.cat([p.detach().reshape(-1) for p in params]).clone())
    return trajectory


def test_the_in_place_step_follows_the_functional_step_and_reuses_two_state_sets() -> None:
    net, model = _net(), _model()
    opt = _optimizer(model, net)
    expected = _reference(4)
    pointers = []
    for step in range(4):
        opt.zero_grad()
        _loss(model, step).backward()
        opt.step()
        got = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        torch.testing.assert_close(got, expected[step], rtol=1e-12, atol=1e-12)
        assert opt._joined is not None
        pointers.append(opt._joined.state[0].data_ptr())
    assert pointers[0] == pointers[2] and pointers[1] == pointers[3] and pointers[0] != pointers[1]  # ping-pong


def test_a_non_finite_update_changes_nothing_and_the_run_goes_on_as_without_it() -> None:
    net, model = _net(), _model()
    opt = _optimizer(model, net)
    expected = _reference(3)
    for step in range(3):
        if step == 1:
            opt.zero_grad()
            _loss(model, step).backward()
            list(model.parameters())[1].grad[2] = float("nan")  # type: ignore[index]
            before = [p.detach().clone() for p in model.parameters()]
            assert opt._joined is not None
            state_before = [part.clone() for part in opt._joined.state]
            opt.step()
            assert opt.skipped_steps == 1
            assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
            assert all(torch.equal(part, b) for part, b in zip(opt._joined.state, state_before))
        opt.zero_grad()
        _loss(model, step).backward()
        opt.step()
        got = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        torch.testing.assert_close(got, expected[step], rtol=1e-12, atol=1e-12)


def test_state_tensors_that_share_memory_are_left_to_the_shells_path() -> None:
    net = _net()
    param = torch.zeros(5, dtype=torch.float64)
    shared = initial_state(net, 5)  # one zero tensor, four times
    assert net.step_in_place([param], [torch.ones(5, dtype=torch.float64)], shared, [(1.0, 0.0)]) is None
    assert torch.equal(param, torch.zeros(5, dtype=torch.float64))


def test_the_compiled_step_follows_the_functional_step(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled_steps = []
    original = CoordinateLSTM._compiled_step

    def spy(self: CoordinateLSTM, *args: Any) -> torch.Tensor | None:
        update = original(self, *args)
        compiled_steps.append(update is not None)
        return update

    monkeypatch.setattr(CoordinateLSTM, "_compiled_step", spy)
    monkeypatch.setattr(lstm_module, "_COMPILED_BLOCK", 4096)  # blocks of 4,096, 4,096 and 611 coordinates
    net, model = _net(), _model()
    params = list(model.parameters())
    opt = LearnedOptimizer(
        [{"params": group, "lr": lr, "weight_decay": wd} for group, (lr, wd) in zip([params[:2], params[2:]], GROUPS)],
        net=net,
        compile=True,
    )
    expected = _reference(3)
    for step in range(3):  # three blocks a step: two full ones and the rest, each shape compiled once
        opt.zero_grad()
        _loss(model, step).backward()
        opt.step()
        got = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        torch.testing.assert_close(got, expected[step], rtol=1e-10, atol=1e-12)
    assert compiled_steps == [True] * 3 and not lstm_module._FAILED_COMPILE


def test_where_compilation_fails_the_eager_step_runs_after_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lstm_module, "_FAILED_COMPILE", [])
    monkeypatch.setattr(lstm_module, "_WARNED", [])

    def broken(*args: object) -> None:
        raise RuntimeError("no C++ compiler\nmore lines")

    monkeypatch.setattr(lstm_module, "_compiled_block", lambda num_layers: broken)
    net, model = _net(), _model()
    opt = _optimizer(model, net)
    opt.compile = True
    expected = _reference(2)
    with pytest.warns(
        RuntimeWarning, match=r"lstm rule: the compiled step is unavailable \(RuntimeError: no C\+\+ compiler\)"
    ):
        opt.zero_grad()
        _loss(model, 0).backward()
        opt.step()
    torch.testing.assert_close(
        torch.cat([p.detach().reshape(-1) for p in model.parameters()]), expected[0], rtol=1e-12, atol=1e-12
    )
    assert lstm_module._FAILED_COMPILE
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        opt.zero_grad()
        _loss(model, 1).backward()
        opt.step()
    torch.testing.assert_close(
        torch.cat([p.detach().reshape(-1) for p in model.parameters()]), expected[1], rtol=1e-12, atol=1e-12
    )
