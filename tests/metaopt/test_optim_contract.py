"""The learned optimizer keeps the ``torch.optim`` contract: compiled steps, copies, pickles, dtypes."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from metaopt import LearnedOptimizer
from metaopt.rules import make_rule


def _model(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).to(dtype)


def _optimizer(model: nn.Module, kind: str) -> LearnedOptimizer:
    if kind == "mlp":
        return LearnedOptimizer(model.parameters(), checkpoint="family-mlp-v0")
    torch.manual_seed(1)
    return LearnedOptimizer(model.parameters(), rule=make_rule("lstm").requires_grad_(False))


def _data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(32, 8, generator=g, dtype=dtype), torch.randn(32, 1, generator=g, dtype=dtype)


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _train(model: nn.Module, opt: LearnedOptimizer, steps: int, compile_with: str | None = None) -> None:
    x, y = _data(next(model.parameters()).dtype)

    def step() -> torch.Tensor:
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        return loss

    run = step if compile_with is None else torch.compile(step, backend=compile_with)
    for _ in range(steps):
        run()


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_a_compiled_training_step_gives_the_eager_results(kind: str, backend: str) -> None:
    eager, compiled = _model(), _model()
    _train(eager, _optimizer(eager, kind), 5)
    _train(compiled, _optimizer(compiled, kind), 5, compile_with=backend)
    if backend == "eager":  # the same kernels: the same bits
        assert torch.equal(_flat(eager), _flat(compiled))
    else:  # inductor fuses the model's forward and backward, which rounds differently (Adam's drift is ~6e-8 here)
        assert torch.allclose(_flat(eager), _flat(compiled), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_continues_bit_for_bit(kind: str, how: str) -> None:
    model = _model()
    opt = _optimizer(model, kind)
    _train(model, opt, 3)
    opt.skipped_steps = 2  # a counter the copy must keep
    pair = copy.deepcopy((model, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((model, opt)))
    twin_model, twin_opt = pair
    assert twin_opt.skipped_steps == 2 and twin_opt.rule is not opt.rule
    assert all(torch.equal(a, b) for a, b in zip(twin_opt.rule.parameters(), opt.rule.parameters()))
    _train(model, opt, 3)
    _train(twin_model, twin_opt, 3)
    assert torch.equal(_flat(model), _flat(twin_model))


def test_complex_parameters_are_refused_with_a_clear_error() -> None:
    real, imaginary = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"does not take complex parameters \(shapes \[\(2,\)\]\).*view_as_real"):
        LearnedOptimizer([real, imaginary], checkpoint="family-mlp-v0")
    opt = LearnedOptimizer([real], checkpoint="family-mlp-v0")
    with pytest.raises(ValueError, match="complex"):
        opt.add_param_group({"params": [imaginary]})
    assert len(opt.param_groups) == 1  # the refused group was not kept


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_float64_parameters_keep_float64_state_and_updates(kind: str) -> None:
    model = _model(torch.float64)
    opt = _optimizer(model, kind)
    before = [p.detach().clone() for p in model.parameters()]
    _train(model, opt, 1)
    rule64 = copy.deepcopy(opt.rule).double()
    params = list(model.parameters())
    grads = torch.cat([p.grad.reshape(-1) for p in params])
    state = rule64.join([rule64.init_state(p) for p in before])
    expected, _ = rule64.step(grads, state, before)
    moved = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(params, before)])
    assert torch.allclose(moved, expected, rtol=1e-12, atol=1e-15)  # computed in float64, not float32
    for p in params:
        assert all(
            v.dtype == torch.float64 for v in opt.state[p].values() if torch.is_tensor(v) and v.is_floating_point()
        )
    assert opt.rule.dtype == torch.float32  # the user's rule itself is untouched


def test_the_blocked_drop_in_step_gives_the_updates_of_the_one_pass_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from metaopt.checkpoint import load_net
    from metaopt.rules import mlp

    rule = load_net("family-mlp-v0")
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(120, 333, generator=g), torch.randn(333, generator=g), torch.randn(10, 333, generator=g)]
    grads = torch.randn(sum(p.numel() for p in params), generator=g)
    assert grads.numel() > 4 * mlp.BLOCK  # several blocks and a partial last one
    state = rule.join([rule.init_state(p) for p in params])
    with torch.no_grad():
        blocked, _ = rule.step(grads, state, params)
        monkeypatch.setattr(mlp, "BLOCK", grads.numel())
        whole, _ = rule.step(grads, state, params)
    assert torch.equal(blocked, whole)
