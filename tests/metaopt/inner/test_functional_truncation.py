"""``benchmarks/compiled_unroll.py``'s functional truncation is the ``higher`` unroll's arithmetic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import envs
from metaopt.rules import make_rule

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


@pytest.fixture(scope="module")
def benchmark() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # the benchmarks import their helpers as ``common``
    try:
        spec = importlib.util.spec_from_file_location("compiled_unroll", BENCHMARKS / "compiled_unroll.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.mark.parametrize("options", [{}, {"scheduler": True, "orthogonalize": True, "adapt_rate": 0.03}])
def test_the_functional_truncation_gives_higher_s_losses_and_meta_gradient(
    benchmark: ModuleType, options: dict
) -> None:
    torch.manual_seed(0)
    rule = make_rule("tiny", {"step_size": 0.01, **options})
    weights = [w for w in rule.parameters() if w.requires_grad]
    task = envs.make_task("digits_mlp", width=8, depth=2, activation="tanh")
    reference_loss = benchmark.higher_truncation(task, 3, rule, 4)
    step, run = benchmark.functional_truncation(task, 3, rule, 4)
    loss = run(step)
    assert float(loss) == float(reference_loss)
    for a, b in zip(benchmark.meta_gradient(loss, weights), benchmark.meta_gradient(reference_loss, weights)):
        assert torch.equal(a, b)
    assert any(float(g.abs().max()) > 0 for g in benchmark.meta_gradient(run(step), weights))
