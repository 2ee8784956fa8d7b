"""The prototypes in ``scripts/prototypes`` compute what their docstrings say (results: docs/results.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import envs.training.optim as optim_module
from envs.training.muon import newton_schulz_factor, orthogonalize
from metaopt import LearnedOptimizer

# imported without registering its optimizer: the registry is global, and other tests list the registered names
_register = optim_module.register_optimizer
sys.path.insert(0, str(Path(__file__).parents[1] / "scripts" / "prototypes"))
optim_module.register_optimizer = lambda *args, **kwargs: None  # type: ignore[assignment]
try:
    import ns_reuse
finally:
    optim_module.register_optimizer = _register
    sys.path.pop(0)


@pytest.mark.parametrize(("shape", "block"), [((40, 90), 0), ((90, 40), 0), ((300, 700), 128), ((2, 30, 50), 0)])
def test_the_left_factor_times_the_matrix_is_the_newton_schulz_result(shape: tuple[int, ...], block: int) -> None:
    matrix = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if len(shape) == 2:
        got = ns_reuse.Reuse(every=1)(matrix, block=block)
    else:  # a batch: each its own factor
        x = matrix / matrix.norm(dim=(-2, -1), keepdim=True)
        got = newton_schulz_factor(x, 5) @ x
    torch.testing.assert_close(got, orthogonalize(matrix, block=block, method="standard"), rtol=1e-9, atol=1e-9)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 96), nn.Tanh(), nn.Linear(96, 96), nn.Tanh(), nn.Linear(96, 4))


def _train(opt: torch.optim.Optimizer, model: nn.Module, steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    inputs, targets = torch.randn(64, 16, generator=generator), torch.randint(0, 4, (64,), generator=generator)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def test_every_step_fresh_is_the_shipped_rule_and_a_reused_factor_is_refreshed_every_k_steps() -> None:
    start = [p.detach().clone() for p in _model().parameters()]
    model = _model()
    shipped = _train(LearnedOptimizer(model.parameters(), checkpoint="family-v3"), model, 3)
    model = _model()
    fresh = ns_reuse.LearnedNSReuse(model.parameters(), checkpoint="family-v3", every=1)
    for got, want, first in zip(_train(fresh, model, 3), shipped, start):
        moved = float((want - first).abs().max())
        assert moved > 1e-3
        torch.testing.assert_close(got, want, rtol=0, atol=1e-3 * moved)  # the Gram form: float32 rounding apart
    assert fresh.reuse.refreshes == 3 * 3  # three matrices, a factor each at each step
    model = _model()
    reused = ns_reuse.LearnedNSReuse(model.parameters(), checkpoint="family-v3", every=3)
    after = _train(reused, model, 7)
    assert reused.reuse.refreshes == 3 * 3  # steps 1, 4 and 7
    assert all(torch.isfinite(p).all() for p in after)
    model = _model()
    seven = _train(LearnedOptimizer(model.parameters(), checkpoint="family-v3"), model, 7)
    gap = max(float((a - b).abs().max() / (b - s).abs().max()) for a, b, s in zip(after, seven, start))
    assert gap > 1e-2  # a reused factor is not the fresh one
    # the swap is undone after each step: the plain optimizer still orthogonalizes afresh
    import metaopt.rules.tiny_inplace as inplace_module

    assert inplace_module.orthogonalize is orthogonalize
