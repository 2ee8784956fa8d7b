"""The ``torch.optim`` contract of ``LearnedOptimizer``: compile, copies, dtypes, complex refusal, divergence watch."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

from metaopt import LearnedOptimizer, load_net
from metaopt.rules import LearnedRule, make_rule


def _rule(name: str) -> LearnedRule:
    if name == "family-mlp-v0":
        return load_net("family-mlp-v0")
    torch.manual_seed(7)
    return make_rule(name, {})


def _model(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)


def _data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(16, 6, generator=generator, dtype=dtype), torch.randn(16, 2, generator=generator, dtype=dtype)


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, compile_backend: str | None = None) -> None:
    x, y = _data(next(model.parameters()).dtype)

    def train_step() -> torch.Tensor:
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    step = torch.compile(train_step, backend=compile_backend) if compile_backend else train_step
    for _ in range(steps):
        step()


@pytest.mark.parametrize(("name", "backend"), [("family-mlp-v0", "eager"), ("lstm", "eager"), ("lstm", "inductor"),
                                               ("family-mlp-v0", "inductor")])  # fmt: skip
def test_compiled_training_step_equals_eager(name: str, backend: str) -> None:
    torch._dynamo.reset()
    rule = _rule(name)
    eager, compiled = _model(), _model()
    _train(eager, LearnedOptimizer(eager.parameters(), rule=rule), 5)
    _train(compiled, LearnedOptimizer(compiled.parameters(), rule=rule), 5, compile_backend=backend)
    moved = (_flat(eager) - _flat(_model())).abs().max()
    assert moved > 1e-3  # the rule moves the parameters: a dropped state would show
    if backend == "eager":  # the same kernels: bit for bit
        assert torch.equal(_flat(compiled), _flat(eager))
    else:  # the compiled forward and backward round differently; the state must not be dropped
        torch.testing.assert_close(_flat(compiled), _flat(eager), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["family-mlp-v0", "lstm"])
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_continue_bit_for_bit(name: str, how: str) -> None:
    model = _model()
    opt = LearnedOptimizer(model.parameters(), rule=_rule(name))
    _train(model, opt, 2)
    opt.skipped_steps = 3  # a counter the copy must keep
    opt.report_loss(1.0)
    pair = (model, opt)
    copied_model, copied = copy.deepcopy(pair) if how == "deepcopy" else pickle.loads(pickle.dumps(pair))
    assert copied.rule is not opt.rule and copied.skipped_steps == 3 and copied.first_loss == 1.0
    for mine, theirs in zip(opt.rule.state_dict().values(), copied.rule.state_dict().values()):
        assert torch.equal(mine, theirs)
    _train(model, opt, 3)
    _train(copied_model, copied, 3)
    assert torch.equal(_flat(model), _flat(copied_model))
    assert not torch.equal(_flat(model), _flat(_model()))


def test_complex_parameters_are_refused_naming_view_as_real() -> None:
    real = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="complex parameters.*view_as_real"):
        LearnedOptimizer([real, nn.Parameter(torch.zeros(2, dtype=torch.complex64))], rule=_rule("lstm"))
    opt = LearnedOptimizer([real], rule=_rule("lstm"))
    with pytest.raises(ValueError, match="complex"):
        opt.add_param_group({"params": nn.Parameter(torch.zeros(2, dtype=torch.complex128))})


@pytest.mark.parametrize("name", ["family-mlp-v0", "lstm"])
def test_float64_parameters_get_float64_state_and_the_float64_rules_update(name: str) -> None:
    rule = _rule(name)
    double = copy.deepcopy(rule).double()
    model, reference = _model(torch.float64), _model(torch.float64)
    opt = LearnedOptimizer(model.parameters(), rule=rule)
    check = LearnedOptimizer(reference.parameters(), rule=double)
    _train(model, opt, 3)
    _train(reference, check, 3)
    assert rule.dtype == torch.float32  # the user's rule is not converted
    assert torch.equal(_flat(model), _flat(reference))
    # a change of the rule's weights between two steps (through ``.data``: no version to compare) reaches the
    # float64 copy; nothing reads ``opt.state`` in between, so the joined state is reused
    for mine, theirs in zip(rule.parameters(), double.parameters()):
        mine.data = mine.data * 0.5
        theirs.data = mine.data.double()
    _train(model, opt, 1)
    _train(reference, check, 1)
    assert torch.equal(_flat(model), _flat(reference))
    dtypes = {v.dtype for piece in opt.state.values() for v in piece.values() if torch.is_tensor(v)}
    assert dtypes == {torch.float64}


def test_divergence_watch_warns_once_from_closure_losses() -> None:
    model = _model()
    opt = LearnedOptimizer(model.parameters(), rule=_rule("lstm"), divergence_ratio=4.0)
    x, y = _data()
    losses = iter([2.0, 3.0, 7.9, 8.5, 100.0])

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return torch.tensor(next(losses))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            opt.step(closure)
        assert not caught and not opt.diverged and opt.first_loss == 2.0  # 7.9 <= 4 * 2
        opt.step(closure)
        opt.step(closure)
    assert opt.diverged
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert "8.5" in str(caught[0].message)


def test_divergence_watch_reported_nonfinite_loss_and_skipped_steps() -> None:
    model = _model()
    opt = LearnedOptimizer(model.parameters(), rule=_rule("lstm"))
    opt.report_loss(float("nan"))  # a non-finite first loss is no reference
    assert opt.first_loss is None
    opt.report_loss(torch.tensor(0.5))
    with pytest.warns(RuntimeWarning, match="rose to inf"):
        opt.report_loss(float("inf"))
    before = _flat(model)
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    opt.step()
    assert opt.skipped_steps == 1 and torch.equal(_flat(model), before)
    with pytest.raises(ValueError, match="divergence_ratio"):
        LearnedOptimizer(model.parameters(), rule=_rule("lstm"), divergence_ratio=1.0)
