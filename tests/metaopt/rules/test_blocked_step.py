"""The drop-in step's blocked path (no autograd) gives the differentiable path's update and state.

The in-place optimizer runs each rule's step under ``no_grad``, where the rules process coordinates in cache-sized
blocks with their biases folded into the products; the unroll runs the plain batched path. Both must agree on models
of several blocks with a partial last one, in float32 (to rounding) and float64 (to 1e-12).
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from metaopt.rules import lstm as lstm_module
from metaopt.rules import make_rule
from metaopt.rules import mlp as mlp_module


def _params(dtype: torch.dtype) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shapes = [(37, 61), (61,), (5, 3, 7, 7), (1,), (2000,), (13, 300)]  # 9,157 coordinates: several blocks
    return [torch.randn(shape, generator=generator, dtype=dtype) for shape in shapes]


def _two_paths(name: str, dtype: torch.dtype) -> tuple[list, list]:
    torch.manual_seed(4)
    rule = make_rule(name, {}).to(dtype)
    with torch.no_grad():  # weights of a trained rule's scale, so the nonlinearities are exercised
        for weight in rule.parameters():
            weight.normal_(0, 0.5)
    params = _params(dtype)
    results = []
    for grad_enabled in (False, True):
        state = rule.join([rule.init_state(p) for p in params])
        generator = torch.Generator().manual_seed(1)
        outputs = []
        for _ in range(3):
            grads = torch.randn(sum(p.numel() for p in params), generator=generator, dtype=dtype) * 1e-2
            with torch.set_grad_enabled(grad_enabled):
                update, state = rule.step(grads, state, params)
            flat_state = [t.detach().clone() for t in (state.values() if isinstance(state, dict) else state)]
            outputs.append([update.detach().clone(), *flat_state])
        results.append(outputs)
    return results[0], results[1]


@pytest.mark.parametrize("name", ["mlp", "lstm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blocked_step_equals_the_differentiable_step(name: str, dtype: torch.dtype) -> None:
    blocked, plain = _two_paths(name, dtype)
    rtol, atol = (1e-5, 1e-6) if dtype == torch.float32 else (1e-12, 1e-14)
    for blocked_step, plain_step in zip(blocked, plain):
        assert blocked_step[0].abs().max() > 0
        for mine, theirs in zip(blocked_step, plain_step):
            torch.testing.assert_close(mine, theirs, rtol=rtol, atol=atol)


def test_blocks_are_smaller_than_the_test_model() -> None:
    assert mlp_module._BLOCK < 9157 and lstm_module._BLOCK < 9157 and 9157 % mlp_module._BLOCK
    assert 9157 % lstm_module._BLOCK


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_blocked_step_follows_in_place_changes_of_the_weights(name: str) -> None:
    torch.manual_seed(0)
    rule = make_rule(name, {})
    params = _params(torch.float32)
    grads = torch.randn(sum(p.numel() for p in params))
    state = rule.join([rule.init_state(p) for p in params])
    with torch.no_grad():
        before, _ = rule.step(grads, state, params)
        for module in rule.modules():
            if isinstance(module, nn.Linear):
                module.bias.add_(0.3)  # the folded copy must see this
        after, _ = rule.step(grads, state, params)
    expected, _ = rule.step(grads, state, params)  # the plain path reads the live weights
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected.detach(), rtol=1e-5, atol=1e-7)
    # a change through ``.data`` (no version bump), as vector_to_parameters and ES perturbations make
    vector = nn.utils.parameters_to_vector(rule.parameters())
    nn.utils.vector_to_parameters(vector * 0.7, rule.parameters())
    with torch.no_grad():
        changed, _ = rule.step(grads, state, params)
    expected, _ = rule.step(grads, state, params)
    assert not torch.allclose(changed, after)
    torch.testing.assert_close(changed, expected.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("few_tensors", [0, 16], ids=["scattered", "by tensor"])
def test_the_mlp_drop_in_reductions_equal_the_differentiable_step(
    few_tensors: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the per-tensor means of the squares in chunks (several per tensor), and the factored sums both ways
    monkeypatch.setattr(mlp_module, "_FEW_TENSORS", few_tensors)
    monkeypatch.setattr(mlp_module, "_LARGE_TENSORS", 1)
    monkeypatch.setattr(mlp_module, "_DENSE_AVERAGE_LIMIT", 0)
    monkeypatch.setattr(mlp_module, "_SQUARE_CHUNK", 1000)
    layout = make_rule("mlp", {})._layout(_params(torch.float64), torch.zeros(1, dtype=torch.float64))
    assert layout.by_tensor == bool(few_tensors) and layout.averager is None
    blocked, plain = _two_paths("mlp", torch.float64)
    for blocked_step, plain_step in zip(blocked, plain):
        for mine, theirs in zip(blocked_step, plain_step):
            torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-14)


def test_the_mlp_drop_in_products_by_tensor_take_each_tensors_own_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensor by tensor, each tensor's bias corrections and factored scale are its own: step counts that differ per
    tensor, and no normalisation (which would divide a per-tensor scale away)."""
    monkeypatch.setattr(mlp_module, "_FEW_TENSORS", 16)
    monkeypatch.setattr(mlp_module, "_LARGE_TENSORS", 1)
    torch.manual_seed(4)
    rule = make_rule("mlp", {"normalize": False}).double()
    params = _params(torch.float64)
    assert rule._layout(params, torch.zeros(1, dtype=torch.float64)).by_tensor
    paths = []
    for grad_enabled in (False, True):
        generator = torch.Generator().manual_seed(2)
        state = rule.join([rule.init_state(p) for p in params])
        state["steps"] = torch.tensor([0.0, 3.0, 7.0, 1.0, 12.0, 4.0], dtype=torch.float64)
        state["factored"] = torch.rand(state["factored"].shape, generator=generator, dtype=torch.float64) + 0.5
        grads = torch.randn(sum(p.numel() for p in params), generator=generator, dtype=torch.float64) * 1e-2
        with torch.set_grad_enabled(grad_enabled):
            paths.append(rule.features(grads, state, params)[0].detach())
            paths.append(rule.step(grads, state, params)[0].detach())
    by_tensor_features, by_tensor_update, plain_features, plain_update = paths
    with torch.no_grad():  # the drop-in features (written into the kept buffer) against the differentiable ones
        layout = rule._layout(params, grads)
        raw = rule._feature_buffer(layout, grads)
        rule._inputs(grads, state, params, layout, out=raw[:-1])
    torch.testing.assert_close(raw[:-1].t(), plain_features[:, : layout.num_raw], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(by_tensor_update, plain_update, rtol=1e-12, atol=1e-14)


def test_the_mlp_blocks_know_their_tensor() -> None:
    rule = make_rule("mlp", {})
    layout = rule._layout(_params(torch.float32), torch.zeros(1))
    # tensors end at 2257, 2318, 3053, 3054, 5054, 8954: blocks of 1000 inside one tensor, or across (-1)
    assert layout.block_tensors(1000) == [0, 0, -1, -1, 4, -1, 5, 5, 5]
    assert layout.block_tensors(2257) == [0, -1, -1, 5]


def test_the_mlp_feature_buffer_is_kept_between_steps_but_not_in_copies() -> None:
    rule = make_rule("mlp", {})
    params = _params(torch.float32)
    grads = torch.randn(sum(p.numel() for p in params))
    state = rule.join([rule.init_state(p) for p in params])
    with torch.no_grad():
        rule.step(grads, state, params)
        buffer = rule._features
        update, _ = rule.step(grads, state, params)
    assert buffer is not None and rule._features is buffer
    for other in (copy.deepcopy(rule), pickle.loads(pickle.dumps(rule))):
        assert other._features is None
        with torch.no_grad():
            torch.testing.assert_close(other.step(grads, state, params)[0], update, rtol=0, atol=0)
