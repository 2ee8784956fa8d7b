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
from metaopt.inner import InnerState, Trajectory, advance
from metaopt.objectives import Objective
from metaopt.objectives.loss import heldout_loss
from metaopt.outer import ESConfig, EstimatorSetup, PersistentES, TruncatedES
from metaopt.outer import es as es_module
from metaopt.outer.es import _copy_inner, rollout
from metaopt.outer.population import run_stacked, run_stacked_many, stack_particles
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
    with pytest.raises(ValueError, match="population must be one of loop, vmap, stack, got 'batched'"):
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


def meta_batch_estimates(
    cls: type, population: str, rule: LearnedRule, tasks: list[Task], offsets: list[int], held_out: bool
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[InnerState]]:
    """Two truncations of ES over a meta-batch (a start offset each, taken as the estimator takes them)."""
    objective = heldout_loss if held_out else optimizee_loss
    estimator = cls(ESConfig(pairs=3, sigma=0.05, population=population), EstimatorSetup(T, objective, seed=7))
    inners = [start_episode(task, 20 + slot, rule, held_out=held_out) for slot, task in enumerate(tasks)]
    estimator.advance(rule, inners, offsets)
    out = []
    for k in range(2):
        estimate = estimator.estimate(rule, inners, meta_step=k)
        assert estimator.population_losses is not None
        out.append((estimator.population_losses.clone(), torch.cat([g.reshape(-1) for g in estimate.grads])))
        metrics = torch.tensor([estimate.metrics["loss"], estimate.metrics["final_loss"]], dtype=torch.float64)
        out.append((metrics, metrics))  # the unperturbed optimizees' meta-loss and final loss
    return out, inners


@pytest.mark.parametrize("held_out", [False, True])
@pytest.mark.parametrize("cls", [TruncatedES, PersistentES])
def test_optimizees_of_one_task_run_their_populations_together_as_each_alone(
    cls: type, held_out: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stack``: three optimizees of one digits task (one vmapped call a step) and a quadratic give the loop
    population's losses and estimates, every optimizee (and PES particle) carried on as the loop carries it; ``vmap``
    runs each optimizee's population alone."""
    groups: list[int] = []
    original = es_module.run_stacked_many

    def spy(inners: list[InnerState], *args: object) -> object:
        groups.append(len(inners))
        return original(inners, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(es_module, "run_stacked_many", spy)
    digits = envs.make_task("digits_mlp", width=6, dtype="float64", valid_size=200)
    tasks = [digits, quadratic(), digits, digits] if not held_out else [digits, digits, digits]
    rule = small_rule("mlp")
    offsets = [2, 0, 1, 3][: len(tasks)]
    loop, loop_inners = meta_batch_estimates(cls, "loop", rule, tasks, offsets, held_out)
    assert groups == []
    stacked, stacked_inners = meta_batch_estimates(cls, "stack", rule, tasks, offsets, held_out)
    assert groups == ([3, 1] * 2 if not held_out else [3, 3])  # the quadratic alone (its own task instance)
    groups.clear()
    vmapped, _ = meta_batch_estimates(cls, "vmap", rule, tasks, offsets, held_out)
    assert groups == [1] * len(tasks) * 2
    assert_agree(loop, stacked)
    assert_agree(loop, vmapped)
    for a, b in zip(loop_inners, stacked_inners, strict=True):  # the unperturbed optimizees carried on alike
        assert a.step == b.step
        assert all(torch.equal(x, y) for x, y in zip(a.next_batch, b.next_batch))  # type: ignore[arg-type]
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)
            for key, value in a.optimizer.state[p].items():
                torch.testing.assert_close(b.optimizer.state[q][key], value, rtol=1e-10, atol=1e-12)


def test_run_stacked_many_gives_each_optimizee_what_run_stacked_gives_it_alone() -> None:
    task = envs.make_task("digits_mlp", width=6, dtype="float64", valid_size=200)
    rule = small_rule("lstm")
    inners = [start_episode(task, seed, rule, held_out=True) for seed in (1, 2)]
    advance(inners[1], 3)  # another step count, so each trajectory must carry its own
    inners[1].context = {"mine": 1}
    torch.manual_seed(3)
    theta = torch.nn.utils.parameters_to_vector(rule.parameters()).detach()
    weights = [theta + 0.05 * torch.randn(4, theta.numel(), dtype=torch.float64) for _ in inners]
    batches = [[next(inner.batches) for _ in range(T + 1)] for inner in inners]
    valid = [[next(inner.valid_batches) for _ in range(T)] for inner in inners]  # type: ignore[arg-type]
    alone = [stack_particles(inner, rule, 4) for inner in inners]
    together = [stack_particles(inner, rule, 4) for inner in inners]
    expected = [run_stacked(i, rule, w, p, b, v) for i, w, p, b, v in zip(inners, weights, alone, batches, valid)]
    got = run_stacked_many(inners, rule, weights, together, batches, valid)
    for want_runs, have_runs in zip(expected, got, strict=True):
        assert len(have_runs) == 4
        for want, have in zip(want_runs, have_runs, strict=True):
            torch.testing.assert_close(have.losses, want.losses, rtol=LOSS_TOLERANCE, atol=0)
            torch.testing.assert_close(have.valid_losses, want.valid_losses, rtol=LOSS_TOLERANCE, atol=0)
            torch.testing.assert_close(have.iterates, want.iterates, rtol=LOSS_TOLERANCE, atol=0)
            assert (have.start_step, have.context) == (want.start_step, want.context)
    assert got[0][0].start_step == 0 and got[1][0].start_step == 3
    for a, b in zip(alone, together, strict=True):  # the particles carried on, each optimizee's its own
        for name in a.params:
            torch.testing.assert_close(b.params[name], a.params[name], rtol=LOSS_TOLERANCE, atol=1e-14)
        for x, y in zip(a.state, b.state, strict=True):  # type: ignore[arg-type]
            torch.testing.assert_close(y, x, rtol=LOSS_TOLERANCE, atol=1e-14)


@pytest.mark.parametrize("population", ["loop", "vmap", "stack"])
def test_the_vmap_and_stack_populations_take_the_start_offsets_together(
    population: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[int]] = []
    monkeypatch.setattr(es_module, "advance_many", lambda inners, rule, counts: calls.append(list(counts)))
    rule = small_rule("mlp")
    inners = [start_episode(quadratic(), seed, rule) for seed in range(2)]
    estimator = TruncatedES(ESConfig(pairs=2, population=population), EstimatorSetup(T, optimizee_loss))
    estimator.advance(rule, inners, [2, 1])
    assert calls == ([] if population == "loop" else [[2, 1]])
    assert [inner.step for inner in inners] == ([2, 1] if population == "loop" else [0, 0])
