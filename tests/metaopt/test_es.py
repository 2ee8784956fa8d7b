"""ES and PES over the rule's weights: in expectation truncated ES is the truncated meta-gradient that backprop
computes, and PES over several truncations is the whole episode's meta-gradient, which truncated ES is not."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import envs
from metaopt import LearnedRule, load_net, optimizee_loss, start_episode, unroll
from metaopt.cli import main
from metaopt.inner import Trajectory
from metaopt.outer import ESConfig, EstimatorSetup, PersistentES, TruncatedES
from metaopt.rules import ParamState
from tests.metaopt.sizes import TINY_TRAIN

T, TRUNCATIONS = 4, 3


class TwoScales(LearnedRule):
    """A stateless rule with two meta-parameters: update = -(e^a g + e^b g^3)."""

    Config = dict  # no options

    def __init__(self, config: dict | None = None):
        super().__init__(config or {})
        self.a = nn.Parameter(torch.tensor(math.log(0.02), dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(math.log(0.005), dtype=torch.float64))

    def init_state(self, param: Tensor) -> ParamState:
        return {}

    def join(self, pieces: Sequence[ParamState]) -> tuple[()]:
        return ()

    def split(self, state: tuple[()], params: Sequence[Tensor]) -> list[ParamState]:
        return [{} for _ in params]

    def step(self, grads: Tensor, state: tuple[()], params: Sequence[Tensor]) -> tuple[Tensor, tuple[()]]:
        return -(self.a.exp() * grads + self.b.exp() * grads**3), state


def task() -> envs.Task:
    return envs.make_task("quadratic", dim=3, init_std=0.5, dtype="float64")


def backprop(rule: TwoScales, *, whole_episode: bool) -> Tensor:
    """The meta-gradient of the episode's summed truncation losses: through the whole unroll, or truncated."""
    inner = start_episode(task(), 3, rule)
    if whole_episode:
        traj = unroll(inner, T * TRUNCATIONS, first_order=False)
        windows = [Trajectory(traj.losses[k * T : (k + 1) * T + 1], traj.iterates[k * T : (k + 1) * T + 1], k * T)
                   for k in range(TRUNCATIONS)]  # fmt: skip
        return torch.stack(torch.autograd.grad(sum(optimizee_loss(w) for w in windows), [rule.a, rule.b]))
    total = torch.zeros(2, dtype=torch.float64)
    for _ in range(TRUNCATIONS):  # the state is carried detached: what truncated backprop differentiates
        total += torch.stack(torch.autograd.grad(optimizee_loss(unroll(inner, T, first_order=False)), [rule.a, rule.b]))
    return total


def es_estimates(cls: type, rule: TwoScales, repeats: int) -> tuple[Tensor, Tensor]:
    """Mean and standard error over ``repeats`` independent runs of the episode's summed estimates."""
    runs = []
    for repeat in range(repeats):
        estimator = cls(ESConfig(pairs=16, sigma=0.01), EstimatorSetup(T, optimizee_loss, seed=repeat))
        inner = start_episode(task(), 3, rule)
        total = torch.zeros(2, dtype=torch.float64)
        for k in range(TRUNCATIONS):
            total += torch.stack([g for g in estimator.estimate(rule, [inner], meta_step=k).grads])
        runs.append(total)
    stacked = torch.stack(runs)
    return stacked.mean(0), stacked.std(0) / math.sqrt(repeats)


def test_truncated_es_agrees_with_truncated_backprop_and_pes_with_the_whole_episode() -> None:
    rule = TwoScales()
    truncated, whole = backprop(rule, whole_episode=False), backprop(rule, whole_episode=True)
    assert bool(((whole - truncated).abs() > 0.3 * whole.abs()).all())  # the truncation bias is large here
    es_mean, es_se = es_estimates(TruncatedES, rule, 32)
    pes_mean, pes_se = es_estimates(PersistentES, rule, 32)
    assert bool(((es_mean - truncated).abs() <= 3 * es_se).all()), (es_mean, es_se, truncated)
    assert bool(((pes_mean - whole).abs() <= 3 * pes_se).all()), (pes_mean, pes_se, whole)
    assert bool(((es_mean - whole).abs() > 3 * es_se).all())  # truncated ES is biased for the episode's gradient


def test_the_unperturbed_optimizee_advances_exactly_as_plain_steps_would() -> None:
    rule = TwoScales()
    estimator = TruncatedES(ESConfig(pairs=2), EstimatorSetup(T, optimizee_loss))
    inner, reference = start_episode(task(), 5, rule), start_episode(task(), 5, rule)
    for k in range(2):
        metrics = estimator.estimate(rule, [inner], meta_step=k).metrics
        trajectory = unroll(reference, T)
        assert metrics["loss"] == pytest.approx(float(optimizee_loss(trajectory).detach()), rel=1e-12)
    assert inner.step == reference.step == 2 * T
    assert all(torch.equal(a, b) for a, b in zip(inner.model.parameters(), reference.model.parameters()))


def test_same_seed_same_estimate_and_bad_options_are_refused() -> None:
    rule = TwoScales()
    first, second = (PersistentES(ESConfig(pairs=3), EstimatorSetup(T, optimizee_loss, seed=4)) for _ in range(2))
    a = first.estimate(rule, [start_episode(task(), 1, rule)], meta_step=0).grads
    b = second.estimate(rule, [start_episode(task(), 1, rule)], meta_step=0).grads
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="sigma must be a finite number in \\(0, inf\\)"):
        ESConfig(sigma=0)


@pytest.mark.parametrize("estimator", ["es", "pes"])
def test_it_meta_trains_through_the_command(estimator: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "metaopt/quadratic.yaml", *TINY_TRAIN, "episodes=2", "rule=mlp",
                 "rule.options={hidden_size: 4}", f"estimator={estimator}", "estimator.options={pairs: 2}",
                 f"out={out}"]) == 0  # fmt: skip
    assert load_net(out / "checkpoints" / "last.pt") is not None
    records = (out / "records.jsonl").read_text()
    assert '"episode": 2' in records
