"""Batched runs equal plain-loop runs; a diverging run stops where the plain loop stops.

Tolerance: relative 1e-5 on float32 losses. The two paths do the same maths, but the batched path computes all
gradients with one vmapped (batched-matmul) kernel, which rounds differently from one matmul per run (~1e-7
relative per step); the learning rates here keep the dynamics contracting, so that stays well under 1e-5 after the
steps run. At very large learning rates the dynamics are chaotic and no tolerance would hold.
"""

from __future__ import annotations

import math

import pytest
import torch

import envs
from envs.training.functional import functional_from_spec
from envs.training.optim import get_optimizer_spec
from metaopt.compare.runner import RunSpec, run_batched, run_plain

OPTIMIZERS = ["sgd", "momentum", "nesterov", "rmsprop", "adam"]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize(
    ("task_name", "lrs", "steps"), [("quadratic", [0.003, 0.03], 25), ("digits_mlp", [0.01, 0.1], 8)]
)
def test_batched_equals_plain(optimizer: str, task_name: str, lrs: list[float], steps: int) -> None:
    task = envs.make_task(task_name)
    runs = [RunSpec(seed, lr) for lr in lrs for seed in (0, 1)]
    twin = functional_from_spec(get_optimizer_spec(optimizer))
    assert twin is not None
    batched = run_batched(task, runs, steps, twin)
    for run, result in zip(runs, batched):
        plain = run_plain(task, run, steps, optimizer)
        assert not result.diverged and not plain.diverged
        torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(plain.losses), rtol=1e-5, atol=0)
        assert math.isclose(result.eval_loss, plain.eval_loss, rel_tol=1e-5)
        assert len(plain.step_seconds) == steps
    first = [r.losses for r in batched]
    assert first[0] != first[1] and first[0][0] == first[2][0]  # seeds differ; lrs share the initial loss


def test_diverged_run_is_frozen_where_the_plain_loop_stops() -> None:
    task = envs.make_task("quadratic")
    runs = [RunSpec(0, 0.01), RunSpec(0, 50.0), RunSpec(1, 50.0)]
    batched = run_batched(task, runs, 60, functional_from_spec(get_optimizer_spec("sgd")))  # type: ignore[arg-type]
    assert [r.diverged for r in batched] == [False, True, True]
    for run, result in zip(runs, batched):
        plain = run_plain(task, run, 60, "sgd")
        assert plain.diverged == result.diverged and len(plain.losses) == len(result.losses)
        assert not math.isfinite(result.losses[-1]) or not result.diverged
        assert all(math.isfinite(v) for v in result.losses[:-1])
    assert len(batched[1].losses) < 60 and len(batched[0].losses) == 60


def test_runs_stacked_with_others_equal_runs_alone() -> None:
    """A chunk's results do not depend on which other runs share it (up to kernel rounding)."""
    task = envs.make_task("digits_mlp")
    twin = functional_from_spec(get_optimizer_spec("adam"))
    assert twin is not None
    together = run_batched(task, [RunSpec(s, 0.01) for s in (3, 4, 5)], 6, twin)
    alone = run_batched(task, [RunSpec(4, 0.01)], 6, twin)
    torch.testing.assert_close(torch.tensor(together[1].losses), torch.tensor(alone[0].losses), rtol=1e-5, atol=0)
