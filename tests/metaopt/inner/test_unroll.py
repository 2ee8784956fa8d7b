"""Unrolls: meta-gradients through higher equal finite differences; truncations carry state exactly."""

from __future__ import annotations

import pytest
import torch

import envs
from metaopt import CoordinateLSTM, LSTMConfig, optimizee_loss, start_episode, unroll
from metaopt.inner import advance


def tiny_net(seed: int = 0) -> CoordinateLSTM:
    torch.manual_seed(seed)
    return CoordinateLSTM(LSTMConfig(hidden_size=4, output_scale=0.1)).double()


def meta_loss(net: CoordinateLSTM, *, first_order: bool, steps: int = 6) -> torch.Tensor:
    task = envs.make_task("quadratic", dim=3, init_std=0.5, dtype="float64")
    inner = start_episode(task, seed=7, rule=net)
    return optimizee_loss(unroll(inner, steps, first_order=first_order))


def test_second_order_meta_gradient_matches_central_differences() -> None:
    net = tiny_net()
    meta_loss(net, first_order=False).backward()
    eps = 1e-6
    checked = 0
    for param in net.parameters():
        flat, grad = param.data.view(-1), param.grad.view(-1)
        for index in torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:1].tolist():
            original = flat[index].item()
            flat[index] = original + eps  # param.data: no autograd history
            plus = meta_loss(net, first_order=False).item()
            flat[index] = original - eps
            minus = meta_loss(net, first_order=False).item()
            flat[index] = original
            numeric = (plus - minus) / (2 * eps)
            assert grad[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)
            checked += 1
    assert checked == len(list(net.parameters()))  # one coordinate of every weight tensor


def test_first_order_drops_only_the_second_derivative_terms() -> None:
    first, second = tiny_net(), tiny_net()
    meta_loss(first, first_order=True).backward()
    meta_loss(second, first_order=False).backward()
    g1 = torch.cat([p.grad.reshape(-1) for p in first.parameters()])
    g2 = torch.cat([p.grad.reshape(-1) for p in second.parameters()])
    assert g1.abs().sum() > 0 and not torch.allclose(g1, g2)
    assert torch.nn.functional.cosine_similarity(g1, g2, dim=0) > 0.5  # an approximation, not another gradient


def test_truncations_carry_parameters_and_hidden_state() -> None:
    net = tiny_net()
    task = envs.make_task("quadratic", dim=3, dtype="float64")
    whole = start_episode(task, seed=1, rule=net)
    pieces = start_episode(task, seed=1, rule=net)
    full = unroll(whole, 10)
    first, second = unroll(pieces, 4), unroll(pieces, 6)
    assert second.start_step == 4 and pieces.step == 10
    assert torch.allclose(full.iterates, torch.cat([first.iterates, second.iterates[1:]]), rtol=0, atol=1e-12)
    assert torch.allclose(full.losses, torch.cat([first.losses, second.losses[1:]]), rtol=0, atol=1e-12)
    start_grads = torch.autograd.grad(second.iterates[0].sum(), list(net.parameters()), allow_unused=True)
    # the window's start is cut from the previous truncation's graph
    assert all(g is None or not g.any() for g in start_grads)


def test_advance_takes_the_steps_of_unroll_without_a_meta_graph() -> None:
    net = tiny_net()
    task = envs.make_task("quadratic", dim=3, dtype="float64")
    differentiable, plain = start_episode(task, seed=2, rule=net), start_episode(task, seed=2, rule=net)
    for steps in (4, 3):  # the second window checks what both carry: parameters, rule state, the scored batch
        trajectory = unroll(differentiable, steps)
        losses = advance(plain, steps)
        torch.testing.assert_close(losses, trajectory.losses.detach(), rtol=0, atol=1e-12)
        for a, b in zip(differentiable.model.parameters(), plain.model.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        assert plain.step == differentiable.step and not losses.requires_grad
