"""The vectorised ES population (``population=vmap``) runs the particles the loop population runs, to rounding.

Everything here is float64 (task and rule), so the only difference between the two paths is the rounding of
batched kernels (``bmm`` over the particles against one ``mm`` each, and the LSTM gates written out against
``aten::lstm_cell``): about 1e-16 relative per operation, measured at most ~1e-15 on the per-particle meta-losses
and ~1e-13 on the estimate (which divides differences of nearly equal losses by sigma^2). The tolerances, 1e-10 on
meta-losses and 1e-7 on estimates, leave a wide margin over that and are still far below what a wrong
implementation gives: swapping the signs of eps exchanges the + and - rows (O(1) relative), and PES particles that
shared state or restarted from the optimizee each truncation change the losses of the second truncation at the
1e-3 level.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.nn.utils import vector_to_parameters

import envs
from envs.task import Task
from metaopt import optimizee_loss, start_episode
from metaopt.cli import main
from metaopt.inner import InnerState, Trajectory
from metaopt.objectives import Objective
from metaopt.objectives.loss import heldout_loss
from metaopt.outer import ESConfig, EstimatorSetup, PersistentES, TruncatedES
from metaopt.outer.es import _copy_inner, rollout
from metaopt.outer.population import run_stacked, stack_particles
from metaopt.rules import LearnedRule, make_rule
from tests.metaopt.sizes import TINY_TRAIN
from tests.metaopt.test_es import TwoScales

T, TRUNCATIONS = 4, 3
LOSS_TOLERANCE, ESTIMATE_TOLERANCE = 1e-10, 1e-7


def quadratic() -> Task:
    return envs.make_task("quadratic", dim=5, init_std=0.5, dtype="float64")


def small_rule(name: str) -> LearnedRule:
    torch.manual_seed(0)
    options = {"hidden_size": 6} if name == "lstm" else {"hidden_size": 8}
    return make_rule(name, options).double()


def estimates(
    cls: type,
    population: str,
    rule: LearnedRule,
    inner: InnerState,
    objective: Objective,
    truncations: int,
    sigma: float,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(population_losses (1, 2, K), flat estimate)`` of each truncation of one episode."""
    estimator = cls(ESConfig(pairs=3, sigma=sigma, population=population), EstimatorSetup(T, objective, seed=7))
    out = []
    for k in range(truncations):
        grads = estimator.estimate(rule, [inner], meta_step=k).grads
        assert estimator.population_losses is not None
        out.append((estimator.population_losses.clone(), torch.cat([g.reshape(-1) for g in grads])))
    return out


def assert_agree(loop: list[tuple[torch.Tensor, torch.Tensor]], vmap: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for (loop_losses, loop_grad), (vmap_losses, vmap_grad) in zip(loop, vmap, strict=True):
        torch.testing.assert_close(vmap_losses, loop_losses, rtol=LOSS_TOLERANCE, atol=0, equal_nan=True)
        torch.testing.assert_close(vmap_grad, loop_grad, rtol=ESTIMATE_TOLERANCE, atol=1e-12)


@pytest.mark.parametrize("rule_name", ["lstm", "mlp"])
@pytest.mark.parametrize("cls", [TruncatedES, PersistentES])
def test_vmap_population_gives_the_loop_populations_meta_losses_and_estimate(cls: type, rule_name: str) -> None:
    rule = small_rule(rule_name)
    runs = {}
    for population in ("loop", "vmap"):
        inner = start_episode(quadratic(), 3, rule)
        runs[population] = estimates(cls, population, rule, inner, optimizee_loss, TRUNCATIONS, 0.05)
    assert_agree(runs["loop"], runs["vmap"])
    first, last = runs["vmap"][0][0], runs["vmap"][-1][0]
    assert not torch.allclose(first[0, 0], first[0, 1], rtol=1e-6)  # the + and - particles differ: signs matter
    assert not torch.allclose(first, last, rtol=1e-6)  # and the truncations too: the test is not trivially true


def test_pes_particles_persist_and_truncated_es_ones_do_not() -> None:
    """On the same noise, PES's second truncation starts its particles where they stopped, ES's at the optimizee."""
    rule = small_rule("mlp")
    pes = estimates(PersistentES, "vmap", rule, start_episode(quadratic(), 3, rule), optimizee_loss, 2, 0.05)
    es = estimates(TruncatedES, "vmap", rule, start_episode(quadratic(), 3, rule), optimizee_loss, 2, 0.05)
    torch.testing.assert_close(pes[0][0], es[0][0], rtol=LOSS_TOLERANCE, atol=0)  # the first truncation is shared
    assert not torch.allclose(pes[1][0], es[1][0], rtol=1e-6)


def test_vmap_population_with_a_held_out_objective_on_digits() -> None:
    task = envs.make_task("digits_mlp", dtype="float64", valid_size=200)
    rule = small_rule("mlp")
    runs = {}
    for population in ("loop", "vmap"):
        inner = start_episode(task, 2, rule, held_out=True)
        runs[population] = estimates(PersistentES, population, rule, inner, heldout_loss, 2, 0.05)
    assert_agree(runs["loop"], runs["vmap"])


def rollouts_and_stacked(
    inner: InnerState, rule: LearnedRule, weights: torch.Tensor, steps: int
) -> tuple[list[Trajectory], list[Trajectory], list[int]]:
    """Each row of ``weights`` as a loop particle (``rollout``) and all of them stacked; the loop's skipped steps."""
    batches = [next(inner.batches) for _ in range(steps + 1)]
    valid = [next(inner.valid_batches) for _ in range(steps)]  # type: ignore[arg-type]
    expected, skipped = [], []
    for row in weights:
        particle = _copy_inner(inner, rule)
        vector_to_parameters(row, rule.parameters())
        expected.append(rollout(particle, batches, valid))
        skipped.append(particle.optimizer.skipped_steps)
    got = run_stacked(inner, rule, weights, stack_particles(inner, rule, len(weights)), batches, valid)
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have.losses, want.losses, rtol=LOSS_TOLERANCE, atol=0, equal_nan=True)
        torch.testing.assert_close(have.valid_losses, want.valid_losses, rtol=LOSS_TOLERANCE, atol=0, equal_nan=True)
        torch.testing.assert_close(have.iterates, want.iterates, rtol=LOSS_TOLERANCE, atol=0)
        assert have.start_step == want.start_step
    return expected, got, skipped


def test_stacked_particles_reproduce_rollout_through_divergence_and_the_nan_guard() -> None:
    """Rule weights chosen so that particles converge, diverge (loss inf), or stall on skipped non-finite updates."""
    rule, task = TwoScales(), envs.make_task("quadratic", dim=3, init_std=0.5, dtype="float64")
    inner = start_episode(task, 3, rule, held_out=True)
    weights = torch.tensor([[math.log(0.02), b] for b in (math.log(0.005), 0.0, 2.0, 4.0)], dtype=torch.float64)
    expected, _, skipped = rollouts_and_stacked(inner, rule, weights, 8)
    assert skipped[2] > 0 and not math.isfinite(expected[1].losses[-1]) and math.isfinite(expected[0].losses[-1])


def test_stacked_particles_apply_the_groups_lr_and_weight_decay() -> None:
    rule = small_rule("mlp")
    inner = start_episode(envs.make_task("digits_mlp", dtype="float64", valid_size=200), 1, rule, held_out=True)
    inner.optimizer.param_groups[0].update(lr=0.5, weight_decay=0.1)
    theta = torch.nn.utils.parameters_to_vector(rule.parameters()).detach()
    weights = torch.stack([theta, theta * 1.01])
    expected, _, _ = rollouts_and_stacked(inner, rule, weights, 3)
    plain = start_episode(envs.make_task("digits_mlp", dtype="float64", valid_size=200), 1, rule, held_out=True)
    assert not torch.allclose(rollouts_and_stacked(plain, rule, weights, 3)[0][0].losses, expected[0].losses)


def test_diverged_pairs_count_as_no_information_in_both_populations() -> None:
    rule, task = TwoScales(), envs.make_task("quadratic", dim=3, init_std=0.5, dtype="float64")
    with torch.no_grad():
        rule.b.fill_(-1.0)  # near the edge: large perturbations of b diverge
    runs = {
        population: estimates(TruncatedES, population, rule, start_episode(task, 3, rule), optimizee_loss, 2, 1.5)
        for population in ("loop", "vmap")
    }
    losses = torch.cat([losses for losses, _ in runs["vmap"]])
    assert bool((~torch.isfinite(losses)).any()) and bool(torch.isfinite(losses).any())
    assert_agree(runs["loop"], runs["vmap"])
    assert all(bool(torch.isfinite(grad).all()) for _, grad in runs["vmap"])


def test_bad_population_and_models_with_buffers_are_refused() -> None:
    with pytest.raises(ValueError, match="population must be one of loop, vmap, got 'batched'"):
        ESConfig(population="batched")
    rule = TwoScales()
    inner = start_episode(quadratic(), 3, rule)
    inner.model.register_buffer("running_mean", torch.zeros(5, dtype=torch.float64))
    estimator = TruncatedES(ESConfig(pairs=2, population="vmap"), EstimatorSetup(T, optimizee_loss))
    with pytest.raises(ValueError, match="has buffers \\(running_mean\\).*population=loop"):
        estimator.estimate(rule, [inner], meta_step=0)


def test_it_meta_trains_through_the_command_with_the_vmap_population(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "metaopt/quadratic.yaml", *TINY_TRAIN, "episodes=2", "rule=mlp",
                 "rule.options={hidden_size: 4}", "estimator=pes", "estimator.options={pairs: 2, population: vmap}",
                 f"out={out}"]) == 0  # fmt: skip
    assert '"episode": 2' in (out / "records.jsonl").read_text()


def test_a_particle_whose_loss_overflowed_stays_where_it_stopped_while_others_go_on() -> None:
    """Past the overflow of the loss (inf, while the gradient is still finite) a particle stops, as ``fit`` stops:
    its iterates stay put and its losses are inf, and the particles that still train are not held back."""
    rule, task = TwoScales(), envs.make_task("quadratic", dim=3, init_std=0.5, dtype="float64")
    inner = start_episode(task, 3, rule, held_out=True)
    weights = torch.tensor([[math.log(0.02), b] for b in (math.log(0.005), 8.0)], dtype=torch.float64)
    expected, got, _ = rollouts_and_stacked(inner, rule, weights, 12)
    stopped = got[1]
    first_inf = next(i for i, loss in enumerate(stopped.losses.tolist()) if not math.isfinite(loss))
    assert 0 < first_inf < 12 and bool(torch.isfinite(stopped.iterates).all())
    after = stopped.iterates[first_inf:]
    assert torch.equal(after, stopped.iterates[first_inf].expand_as(after))
    assert bool(torch.isfinite(got[0].losses).all()) and got[0].losses[-1] < got[0].losses[0]
