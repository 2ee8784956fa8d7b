"""The start offsets taken together (:func:`metaopt.inner.stacked.advance_many`) end where each optimizee's own
:func:`~metaopt.inner.advance` ends.

In float64, so that "the same steps" can be checked to 1e-12: parameters, every tensor of the rule state, the step
count, the next batch drawn and the guard's count of skipped steps, for a meta-batch with a stacked pair, another
shape, a quadratic, an optimizee with its own rate and decay, and counts of 0 to 5 (three phases). Then the two
meta-batches take two more plain steps one by one: the state written back must be one the drop-in step goes on from.
An optimizee whose loss stops being finite stops there; one whose update is not finite is left where it was and
counts a skip; the others go on as if neither were there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import envs
import metaopt.outer.truncated_backprop as module
from envs.task import Batch, Task
from envs.tasks.quadratic import QuadraticOptions, QuadraticTask
from metaopt.commands.train import run_train
from metaopt.inner import InnerState, advance, start_episode
from metaopt.inner.stacked import advance_many, stack_key
from metaopt.outer import EstimatorSetup, TruncatedBackprop
from metaopt.outer.truncated_backprop import TruncatedBackpropConfig
from metaopt.rules import LearnedRule
from metaopt.shells import LearnedOptimizer
from tests.metaopt.inner.test_stacked import rule_named
from tests.metaopt.training.test_family import config

F64 = torch.float64


def digits(width: int, depth: int = 1) -> Task:
    return envs.make_task("digits_mlp", width=width, depth=depth, dtype=F64)


class _NaNGradient(QuadraticTask):
    """A quadratic whose first coordinate starts at 0 under a ``0 * sqrt(|theta_0|)`` term: a finite loss, a NaN
    gradient at every step (the drop-in guard's case)."""

    def build_model(self) -> nn.Module:
        model = super().build_model()
        with torch.no_grad():
            model.theta[0] = 0.0  # type: ignore[index]
        return model

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return super().loss(model, batch) + 0.0 * model.theta[0].abs().sqrt()  # type: ignore[index]

    def instance(self, seed: int) -> QuadraticTask:
        return _NaNGradient(dataclasses.replace(self.options, data_seed=seed), device=self.device, dtype=self.dtype)


def quadratic(nan_gradient: bool = False) -> Task:
    return (_NaNGradient if nan_gradient else QuadraticTask)(QuadraticOptions(dim=4, init_std=0.5), dtype=F64)


def meta_batch(tasks: list[Task], rule: LearnedRule, rates: dict[int, tuple[float, float]]) -> list[InnerState]:
    inners = [start_episode(task, 10 + slot, rule) for slot, task in enumerate(tasks)]
    for slot, (lr, weight_decay) in rates.items():
        inner = inners[slot]
        inner.optimizer = LearnedOptimizer(inner.model.parameters(), rule=rule, lr=lr, weight_decay=weight_decay)
    return inners


def one_by_one(inners: list[InnerState], counts: list[int]) -> None:
    for inner, count in zip(inners, counts):
        if count:
            advance(inner, count)


def state_tensors(inner: InnerState) -> list[Tensor]:
    found = []
    for p in inner.model.parameters():
        found += [value for _, value in sorted(inner.optimizer.state[p].items()) if isinstance(value, Tensor)]
    return found


def assert_same_place(together: list[InnerState], alone: list[InnerState]) -> None:
    compared = 0
    for a, b in zip(together, alone, strict=True):
        assert a.step == b.step
        assert a.optimizer.skipped_steps == b.optimizer.skipped_steps
        assert (a.next_batch is None) == (b.next_batch is None)
        if b.next_batch is not None:
            assert all(torch.equal(x, y) for x, y in zip(a.next_batch, b.next_batch))  # type: ignore[arg-type]
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
        sa, sb = state_tensors(a), state_tensors(b)
        assert len(sa) == len(sb)
        for x, y in zip(sa, sb):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
        compared += len(sa)
    assert compared > 0


def twins(tasks: list[Task], rule: LearnedRule, rates: dict[int, tuple[float, float]]) -> tuple[list, list]:
    return meta_batch(tasks, rule, rates), meta_batch(tasks, rule, rates)  # start_episode is seeded: twins


@pytest.mark.parametrize("rule_name", ["mlp", "lstm", "tiny-recipe"])
def test_together_ends_where_each_advance_ends(rule_name: str) -> None:
    rule = rule_named(rule_name).to(F64)
    twelve = digits(12)
    tasks = [twelve, twelve, digits(8, depth=2), quadratic(), twelve]
    together, alone = twins(tasks, rule, {4: (0.5, 0.1)})
    assert stack_key(together[0]) == stack_key(together[1]) != stack_key(together[4])  # a stacked pair; own rates
    counts = [3, 5, 0, 4, 5]
    advance_many(together, rule, counts)
    one_by_one(alone, counts)
    assert [inner.step for inner in together] == counts
    assert together[2].next_batch is None  # no steps, nothing drawn
    assert_same_place(together, alone)
    for inners in (together, alone):  # and the drop-in step goes on from what was written back
        one_by_one(inners, [2] * len(inners))
    assert_same_place(together, alone)


def test_an_optimizee_whose_loss_is_not_finite_stops_there_and_the_others_go_on() -> None:
    rule = rule_named("mlp").to(F64)
    tasks = [digits(12), quadratic(), digits(12), digits(8)]
    together, alone = twins(tasks, rule, {1: (1e160, 0.0)})  # its loss overflows after a step
    counts = [6, 6, 5, 2]
    advance_many(together, rule, counts)
    one_by_one(alone, counts)
    assert 0 < together[1].step < 6 and together[1].next_batch is None
    assert [together[i].step for i in (0, 2, 3)] == [6, 5, 2]
    assert_same_place(together, alone)


def test_an_optimizee_whose_update_is_not_finite_stays_and_counts_skips() -> None:
    rule = rule_named("tiny-recipe").to(F64)
    tasks = [digits(12), quadratic(nan_gradient=True), digits(12)]
    together, alone = twins(tasks, rule, {})
    start = [p.detach().clone() for p in together[1].model.parameters()]
    counts = [4, 3, 4]
    advance_many(together, rule, counts)
    one_by_one(alone, counts)
    assert together[1].optimizer.skipped_steps == 3 and together[1].step == 3
    assert all(torch.equal(p, s) for p, s in zip(together[1].model.parameters(), start))
    assert together[0].optimizer.skipped_steps == 0
    assert_same_place(together, alone)


def test_stack_takes_the_offsets_together_and_loop_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[list[int]] = []
    monkeypatch.setattr(module, "advance_many", lambda inners, rule, counts: calls.append(list(counts)))
    rule = rule_named("tiny-recipe")
    inners = [start_episode(envs.make_task("digits_mlp", width=4), seed, rule) for seed in range(2)]
    setup = EstimatorSetup(5, None)  # type: ignore[arg-type]
    TruncatedBackprop(TruncatedBackpropConfig(optimizees="stack"), setup).advance(rule, inners, [2, 1])
    assert calls == [[2, 1]] and [inner.step for inner in inners] == [0, 0]
    TruncatedBackprop(TruncatedBackpropConfig(optimizees="loop"), setup).advance(rule, inners, [2, 1])
    assert calls == [[2, 1]] and [inner.step for inner in inners] == [2, 1]


def test_a_parameter_without_a_gradient_is_refused_as_by_the_stacked_unroll() -> None:
    rule = rule_named("mlp")
    inner = start_episode(envs.make_task("digits_mlp", width=4), 0, rule)
    inner.model.register_parameter("unused", nn.Parameter(torch.zeros(3)))
    inner.optimizer = LearnedOptimizer(inner.model.parameters(), rule=rule)
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        advance_many([inner], rule, [2])


def test_counts_are_checked() -> None:
    rule = rule_named("mlp")
    inners = [start_episode(envs.make_task("digits_mlp", width=4), 0, rule)]
    with pytest.raises(ValueError, match="one count >= 0 per optimizee"):
        advance_many(inners, rule, [1, 2])
    with pytest.raises(ValueError, match="one count >= 0 per optimizee"):
        advance_many(inners, rule, [-1])


def test_metaopt_train_takes_the_offsets_through_its_estimator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[int]] = []

    def spy(inners: list[InnerState], rule: LearnedRule, counts: list[int]) -> None:
        calls.append(list(counts))
        advance_many(inners, rule, counts)

    monkeypatch.setattr(module, "advance_many", spy)
    overrides = ["tasks=[{name: digits_mlp, options: {width: 6}}]", "start_offset=3", "episodes=2", "meta_batch=2",
                 "rule.name=mlp", "rule.options.hidden_size=4", "val_every=2", "val_seeds=1",
                 "estimator.options.optimizees=stack"]  # fmt: skip
    run_train(config(tmp_path, *overrides))
    assert len(calls) == 2 and all(len(counts) == 2 for counts in calls)


def test_an_optimizee_stopped_inside_a_stacked_group_is_left_as_it_was() -> None:
    """Two optimizees of one task with a decay (one stacked group): the one whose loss is NaN from the start stops
    there untouched (no decay either) while its twin takes every step, as each one's own ``advance`` does."""
    rule = rule_named("mlp").to(F64)
    task = digits(12)
    together, alone = twins([task, task], rule, {0: (0.5, 0.1), 1: (0.5, 0.1)})
    assert stack_key(together[0]) == stack_key(together[1])
    for inners in (together, alone):
        with torch.no_grad():
            inners[0].model[-1].bias[0] = float("nan")  # type: ignore[index]
    start = [p.detach().clone() for p in together[0].model.parameters()]
    advance_many(together, rule, [3, 3])
    one_by_one(alone, [3, 3])
    assert [inner.step for inner in together] == [0, 3] and together[0].next_batch is None
    for p, s in zip(together[0].model.parameters(), start, strict=True):
        torch.testing.assert_close(p, s, rtol=0, atol=0, equal_nan=True)
    for p, q in zip(together[1].model.parameters(), alone[1].model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
