"""The per-parameter MLP rule: set to Adam it is Adam, its meta-gradients through higher equal finite differences,
its inputs are scale-free, its state round-trips, and it trains through `metaopt train`."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import envs
from metaopt import LearnedOptimizer, load_net, optimizee_loss, start_episode, unroll
from metaopt.cli import main
from metaopt.rules import MLPConfig, PerParameterMLP, adam_weights
from tests.metaopt.sizes import TINY_TRAIN


def model_and_data(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    return model, torch.randn(32, 5, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)


def train(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize(("lr", "decays"), [(0.01, [0.5, 0.9, 0.99]), (0.003, [0.8, 0.95])])
def test_set_to_adam_it_is_adam_step_for_step(lr: float, decays: list[float]) -> None:
    ours, x, y = model_and_data()
    reference = copy.deepcopy(ours)
    rule = adam_weights(PerParameterMLP(MLPConfig(normalize=False, momentum_decays=decays, adam_momentum=1)), lr)
    beta1 = decays[1]
    learned = LearnedOptimizer(ours.parameters(), rule=rule.double())
    adam = torch.optim.Adam(reference.parameters(), lr=lr, betas=(beta1, 0.999), eps=1e-8)
    for _ in range(40):
        train(ours, learned, x, y, 1)
        train(reference, adam, x, y, 1)
        for a, b in zip(ours.parameters(), reference.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="normalize=False"):
        adam_weights(PerParameterMLP(), lr)


def meta_loss(rule: PerParameterMLP, steps: int = 5) -> torch.Tensor:
    task = envs.make_task("quadratic", dim=3, init_std=0.5, dtype="float64")
    return optimizee_loss(unroll(start_episode(task, seed=3, rule=rule), steps, first_order=False))


def test_meta_gradient_through_higher_matches_central_differences() -> None:
    torch.manual_seed(0)
    rule = PerParameterMLP(MLPConfig(hidden_size=6, step_mult=0.05)).double()
    with torch.no_grad():
        rule.readout.weight.mul_(300)  # updates large enough that the meta-loss depends on every weight
    meta_loss(rule).backward()
    eps, checked = 1e-6, 0
    for param in rule.parameters():
        flat, grad = param.data.view(-1), param.grad.view(-1)
        index = int(grad.abs().argmax())  # the most informative coordinate of the tensor
        original = flat[index].item()
        flat[index] = original + eps
        plus = meta_loss(rule).item()
        flat[index] = original - eps
        minus = meta_loss(rule).item()
        flat[index] = original
        assert grad[index].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-4, abs=1e-9)
        checked += 1
    assert checked == len(list(rule.parameters()))


def test_second_order_meta_gradient_is_finite_where_some_gradients_are_always_zero() -> None:
    """The digits' border pixels are 0 in every image: their first-layer weights get zero gradients at every step.
    Second order, the meta-gradient reaches the Adam feature's square root at v = 0, whose slope is infinite; it must
    stay finite and equal central differences."""
    torch.manual_seed(0)
    rule = PerParameterMLP(MLPConfig(hidden_size=6, step_mult=0.05)).double()
    task = envs.make_task("digits_mlp", width=4, depth=1, dtype="float64")

    def loss() -> torch.Tensor:
        return optimizee_loss(unroll(start_episode(task, seed=1, rule=rule), 3, first_order=False))

    loss().backward()
    eps = 1e-6
    for param in rule.parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()
        flat, grad = param.data.view(-1), param.grad.view(-1)
        index = int(grad.abs().argmax())
        original = flat[index].item()
        flat[index] = original + eps
        plus = loss().item()
        flat[index] = original - eps
        minus = loss().item()
        flat[index] = original
        assert grad[index].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-4, abs=1e-9)


def test_normalised_inputs_make_the_update_independent_of_the_loss_scale() -> None:
    torch.manual_seed(1)
    rule = PerParameterMLP().double()
    with torch.no_grad():
        rule.readout.weight.mul_(1000)
    updates = []
    for scale in (1.0, 1000.0):
        model, x, y = model_and_data(2)
        before = [p.detach().clone() for p in model.parameters()]
        opt = LearnedOptimizer(model.parameters(), rule=rule)
        for _ in range(3):
            opt.zero_grad()
            (scale * ((model(x) - y) ** 2).mean()).backward()
            opt.step()
        updates.append(torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(model.parameters(), before)]))
    assert updates[0].abs().max() > 0
    torch.testing.assert_close(updates[0], updates[1], rtol=1e-4, atol=1e-9)


def test_state_splits_joins_and_round_trips_through_state_dict() -> None:
    rule = PerParameterMLP().double()
    model, x, y = model_and_data(3)
    twin = copy.deepcopy(model)
    opt = LearnedOptimizer(model.parameters(), rule=rule)
    train(model, opt, x, y, 3)
    state = opt.state_dict()
    params = list(model.parameters())
    assert state["state"][0]["momenta"].shape == (params[0].numel(), 3)
    assert state["state"][0]["row"].shape == (4,) and state["state"][1]["row"].shape == (0,)  # factored for matrices
    pieces = [opt.state[p] for p in params]
    for piece, back in zip(pieces, rule.split(rule.join(pieces), params)):
        assert all(torch.equal(piece[k], back[k]) for k in piece)
    other = LearnedOptimizer(twin.parameters(), rule=rule)
    twin.load_state_dict(model.state_dict())
    other.load_state_dict(copy.deepcopy(state))
    train(model, opt, x, y, 2)
    train(twin, other, x, y, 2)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_it_meta_trains_through_the_command_and_loads_by_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(["train", "metaopt/quadratic.yaml", *TINY_TRAIN, "episodes=2", "rule=mlp",
                 "rule.options={hidden_size: 8}", f"out={out}"])  # fmt: skip
    assert code == 0
    rule = load_net(out / "checkpoints" / "last.pt")
    assert isinstance(rule, PerParameterMLP) and rule.config.hidden_size == 8
    model = envs.make_task("quadratic", dim=4).init_model(0)
    optimizer = LearnedOptimizer(model.parameters(), checkpoint=out / "checkpoints" / "best.pt")
    assert isinstance(optimizer.rule, PerParameterMLP)
    with pytest.raises(ValueError, match="hidden_size must be an integer in \\[2, inf\\)"):
        MLPConfig(hidden_size=1)
