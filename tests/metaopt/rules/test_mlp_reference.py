"""The ``mlp`` rule gives the updates, state and meta-gradients it gave before its step was made fast.

``data/mlp-v0-updates.pt`` was written by :func:`reference_cases` with the code of commit 71dbb97 (the per-tensor
step, before the flat-buffer rewrite; see data/README.md): the shipped ``family-mlp-v0`` on ``digits_mlp`` in float32,
and untrained rules in float64 on a model with a 4-d convolution kernel, matrices, vectors and a scalar, in place
(``LearnedOptimizer``, under ``no_grad``) and through higher's differentiable twin (with the meta-gradient).
"""

from __future__ import annotations

from pathlib import Path

import higher
import torch
from torch import Tensor, nn

import envs
from metaopt import LearnedOptimizer
from metaopt.rules import MLPConfig, PerParameterMLP

DATA = Path(__file__).parent / "data" / "mlp-v0-updates.pt"
STEPS = 5


class _Recorder:
    """Wraps a rule's ``step`` to keep each update it returns."""

    def __init__(self, rule: PerParameterMLP):
        self.updates: list[Tensor] = []
        self.step = rule.step

    def __call__(self, grads: Tensor, state: dict, params: list[Tensor]) -> tuple[Tensor, dict]:
        update, new_state = self.step(grads, state, params)
        self.updates.append(update.detach().clone())
        return update, new_state


def _flat_state(opt: LearnedOptimizer) -> dict[str, Tensor]:
    """The optimizer's per-parameter state, one flat tensor per key (``state/momenta``, ...)."""
    keys = ("momenta", "second_moment", "row", "col", "step")
    return {f"state/{k}": torch.cat([opt.state[p][k].reshape(-1) for p in opt.state]) for k in keys}


def pretrained_digits() -> dict[str, Tensor]:
    """Updates, parameters and state of 5 steps of the shipped rule on digits_mlp (float32, seeds 0)."""
    task = envs.make_task("digits_mlp")
    model = task.init_model(0)
    opt = LearnedOptimizer(model.parameters(), checkpoint="family-mlp-v0")
    recorder = _Recorder(opt.rule)
    opt.rule.step = recorder  # type: ignore[method-assign]
    batches, params = task.batches(0), []
    for _ in range(STEPS):
        opt.zero_grad()
        task.loss(model, next(batches)).backward()
        opt.step()
        params.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    return {"updates": torch.stack(recorder.updates), "params": torch.stack(params), **_flat_state(opt)}


class _Mixed(nn.Module):
    """Every shape the factored moment distinguishes: a conv kernel (4-d), matrices, vectors and a scalar."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.linear = nn.Linear(12, 4)
        self.head = nn.Linear(4, 1, bias=False)
        self.scale = nn.Parameter(torch.tensor(0.7))

    def forward(self, x: Tensor) -> Tensor:
        hidden = torch.tanh(self.conv(x)).flatten(1)
        return self.scale * self.head(torch.tanh(self.linear(hidden)))


def _mixed(seed: int) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(seed)
    model = _Mixed().double()
    return model, torch.randn(8, 2, 4, 4, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)


def _rule(normalize: bool) -> PerParameterMLP:
    torch.manual_seed(5)
    rule = PerParameterMLP(MLPConfig(normalize=normalize, hidden_size=8, step_mult=0.01)).double()
    with torch.no_grad():
        rule.readout.weight.mul_(300)  # out of the near-zero start: every feature moves the update
    return rule


def mixed_in_place(normalize: bool) -> dict[str, Tensor]:
    """5 in-place steps of an untrained float64 rule on :class:`_Mixed`."""
    model, x, y = _mixed(1)
    rule = _rule(normalize)
    opt = LearnedOptimizer(model.parameters(), rule=rule)
    recorder = _Recorder(rule)
    rule.step = recorder  # type: ignore[method-assign]
    for _ in range(STEPS):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return {"updates": torch.stack(recorder.updates), **_flat_state(opt)}


def mixed_twin(normalize: bool) -> dict[str, Tensor]:
    """5 differentiable steps through higher and the meta-gradient of the summed losses w.r.t. the rule's weights."""
    model, x, y = _mixed(2)
    rule = _rule(normalize)
    recorder = _Recorder(rule)
    rule.step = recorder  # type: ignore[method-assign]
    total = torch.zeros((), dtype=torch.float64)
    with higher.innerloop_ctx(model, LearnedOptimizer(model.parameters(), rule=rule)) as (fmodel, diffopt):
        for _ in range(STEPS):
            loss = ((fmodel(x) - y) ** 2).mean()
            diffopt.step(loss)
            total = total + loss
        total = total + ((fmodel(x) - y) ** 2).mean()
    total.backward()
    meta_grad = torch.cat([p.grad.reshape(-1) for p in rule.parameters()])
    return {"updates": torch.stack(recorder.updates), "meta_grad": meta_grad}


def reference_cases() -> dict[str, Tensor]:
    """Every recorded tensor, by ``case/name``."""
    cases = {
        "pretrained": pretrained_digits(),
        "in_place": mixed_in_place(True),
        "in_place_raw": mixed_in_place(False),
        "twin": mixed_twin(True),
        "twin_raw": mixed_twin(False),
    }
    return {f"{case}/{name}": value for case, values in cases.items() for name, value in values.items()}


def test_the_step_gives_the_recorded_updates_state_and_meta_gradients() -> None:
    expected = torch.load(DATA, weights_only=True)
    found = reference_cases()
    assert sorted(found) == sorted(expected)
    for key, value in expected.items():
        tolerance = 1e-5 if value.dtype == torch.float32 else 1e-9
        scale = float(value.abs().max())
        torch.testing.assert_close(found[key], value, rtol=tolerance, atol=tolerance * scale, msg=key)
