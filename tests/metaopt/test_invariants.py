"""Invariants a wrong implementation breaks: each test fails on one of the mutants of ``scripts/mutation_pass.py``.

The output scale scales the update; every parameter group is updated; ``second_order`` reaches the unroll and
changes the meta-gradient; the rule state carried between truncations is cut from the meta-graph; the loop clips the
meta-gradient; tuning, validation, evaluation and training seeds never overlap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import higher
import pytest
import torch
from torch import nn

import envs
from envs.tooling.config import load_config
from envs.tooling.runs import Run
from metaopt import CoordinateLSTM, LearnedOptimizer, LSTMConfig, MetaGradient, TrainConfig, start_episode, unroll
from metaopt.commands import run_compare
from metaopt.compare import CompareConfig, CompareTaskConfig
from metaopt.objectives import ObjectiveConfig, make_objective
from metaopt.outer import EstimatorSetup, TruncatedBackprop
from metaopt.outer import truncated_backprop as truncated_backprop_module
from metaopt.training import TRAIN_SEED_BASE, MetaTrainer, train_seed
from metaopt.training import validation as validation_module
from tests.metaopt.sizes import TINY_TRAIN


def lstm(output_scale: float, seed: int = 0) -> CoordinateLSTM:
    torch.manual_seed(seed)  # the same weights whatever the scale: it is not a weight
    return CoordinateLSTM(LSTMConfig(hidden_size=4, output_scale=output_scale)).double()


# -- the update ----------------------------------------------------------------------------------------------------


def test_doubling_output_scale_doubles_the_update() -> None:
    grads = torch.linspace(-2.0, 3.0, 7, dtype=torch.float64)
    updates = []
    for scale in (0.25, 0.5):  # powers of two: the ratio is exact
        net = lstm(scale)
        param = torch.zeros(7, dtype=torch.float64, requires_grad=True)
        param.grad = grads.clone()
        LearnedOptimizer([param], rule=net).step()
        updates.append(param.detach().clone())
    assert updates[0].abs().min() > 0
    assert torch.equal(updates[1], 2 * updates[0])


def two_layer_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def loss_of(model: nn.Module) -> torch.Tensor:
    x = torch.linspace(-1.0, 1.0, 15, dtype=torch.float64).view(5, 3)
    return model(x).pow(2).mean()


def test_every_parameter_group_is_updated_as_one_group_would_be() -> None:
    net = lstm(0.1, seed=1)
    one, two = two_layer_model(), two_layer_model()
    single = LearnedOptimizer(one.parameters(), rule=net)
    grouped = LearnedOptimizer([{"params": two[0].parameters()}, {"params": two[2].parameters()}], rule=net)
    start = [p.detach().clone() for p in two.parameters()]
    for _ in range(3):
        for model, opt in ((one, single), (two, grouped)):
            opt.zero_grad()
            loss_of(model).backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(one.parameters(), two.parameters()))
    assert all(not torch.equal(p, s) for p, s in zip(two.parameters(), start))  # both groups moved
    twin = two_layer_model()
    twin_groups = LearnedOptimizer([{"params": twin[0].parameters()}, {"params": twin[2].parameters()}], rule=net)
    with higher.innerloop_ctx(twin, twin_groups) as (fmodel, diffopt):  # the differentiable twin, from two groups
        reference = two_layer_model()
        plain = LearnedOptimizer(reference.parameters(), rule=net)
        for _ in range(2):
            diffopt.step(loss_of(fmodel))
            plain.zero_grad()
            loss_of(reference).backward()
            plain.step()
        for fast, slow in zip(fmodel.fast_params, reference.parameters()):
            torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)


# -- the meta-gradient ---------------------------------------------------------------------------------------------


def estimate(second_order: bool) -> torch.Tensor:
    net = lstm(0.1, seed=2)
    task = envs.make_task("quadratic", dim=3, init_std=0.5, dtype="float64")
    setup = EstimatorSetup(4, make_objective(ObjectiveConfig()), second_order)
    gradient = TruncatedBackprop(None, setup).estimate(net, [start_episode(task, 7, net)], meta_step=0)
    return torch.cat([g.reshape(-1) for g in gradient.grads if g is not None])


def test_second_order_changes_the_meta_gradient_on_a_curved_problem() -> None:
    first, second = estimate(False), estimate(True)
    assert first.abs().sum() > 0 and not torch.allclose(first, second, rtol=1e-6, atol=0)


def test_the_trainer_hands_second_order_to_the_unroll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    real = truncated_backprop_module.unroll

    def spy(inner: Any, steps: int, *, first_order: bool = False) -> Any:
        seen.append(first_order)
        return real(inner, steps, first_order=first_order)

    monkeypatch.setattr(truncated_backprop_module, "unroll", spy)
    for second_order in (True, False):
        seen.clear()
        cfg = load_config(TrainConfig, "metaopt/quadratic.yaml", [*TINY_TRAIN, f"second_order={second_order}"])
        with Run.create("t", cfg, str(tmp_path / str(second_order))) as run:
            trainer = MetaTrainer(cfg, run)
            trainer.episode()
        assert seen and set(seen) == {not second_order}


def test_the_state_carried_to_the_next_truncation_is_cut_from_the_meta_graph() -> None:
    net = lstm(0.1)
    task = envs.make_task("quadratic", dim=3, dtype="float64")
    inner = start_episode(task, 1, net)
    unroll(inner, 3)
    carried = [t for state in inner.optimizer.state.values() for t in state.values()]
    assert carried and all(t.grad_fn is None and not t.requires_grad for t in carried)
    assert all(p.grad_fn is None for p in inner.model.parameters())
    second = unroll(inner, 3)  # its meta-gradient needs nothing from the first truncation's (freed) graph
    torch.autograd.grad(second.losses.sum(), list(net.parameters()), allow_unused=True)


@pytest.mark.parametrize(("clip", "norm"), [(1.0, 1.0), (0.0, 20.0)])
def test_the_loop_clips_the_meta_gradient_to_clip_grad_norm(tmp_path: Path, clip: float, norm: float) -> None:
    cfg = load_config(TrainConfig, "metaopt/quadratic.yaml", [*TINY_TRAIN, f"clip_grad_norm={clip}"])
    with Run.create("t", cfg, str(tmp_path / "run")) as run:
        trainer = MetaTrainer(cfg, run)
        weights = list(trainer.rule.parameters())
        count = sum(w.numel() for w in weights)
        grads = tuple(torch.full_like(w, 20.0 / count**0.5) for w in weights)  # global norm 20
        assert trainer.apply(MetaGradient(grads, {"loss": 1.0}))
        total = torch.cat([w.grad.reshape(-1) for w in weights]).norm()
    assert float(total) == pytest.approx(norm, rel=1e-5)


# -- seeds ----------------------------------------------------------------------------------------------------------


def test_compare_tunes_and_evaluates_on_disjoint_seed_sets(tmp_path: Path) -> None:
    cfg = CompareConfig(
        tasks={"quad": CompareTaskConfig(name="quadratic", options={"dim": 3}, steps=5)},
        optimizers=["sgd"], reference="sgd", lr_grid=[0.01, 0.1], tuning_seeds=3, tuning_seed_offset=4, eval_seeds=2,
        eval_seed_offset=50, final_window=2, timing=False, device="cpu", out=str(tmp_path / "run"),
    )  # fmt: skip
    run_compare(cfg, progress=False)
    records = Run(tmp_path / "run").records("unit")
    tuned = {r["seed"] for r in records if r["phase"] == "tune"}
    evaluated = {r["seed"] for r in records if r["phase"] == "eval"}
    assert tuned == {4, 5, 6} and evaluated == {50, 51}


def test_meta_training_tunes_validates_and_trains_on_disjoint_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, list[int]] = {"tune": [], "val": []}
    real = validation_module.tuned_baseline

    def spy(task: Any, optimizer: str, tuning_seeds: Any, eval_seeds: Any, *args: Any) -> Any:
        calls["tune"] += list(tuning_seeds)
        calls["val"] += list(eval_seeds)
        return real(task, optimizer, tuning_seeds, eval_seeds, *args)

    monkeypatch.setattr(validation_module, "tuned_baseline", spy)
    cfg = load_config(TrainConfig, "metaopt/quadratic.yaml", [*TINY_TRAIN, "val_seeds=3", "tune_seeds=2"])
    with Run.create("t", cfg, str(tmp_path / "run")) as run:
        trainer = MetaTrainer(cfg, run)
        validation_module.validate(cfg, trainer.tasks, trainer.rule, {})
    tune, val = set(calls["tune"]), set(calls["val"])
    assert len(tune) == 2 and len(val) == 3 and not tune & val
    training = {train_seed(e, s, cfg.meta_batch) for e in range(cfg.episodes) for s in range(cfg.meta_batch)}
    assert min(training) >= TRAIN_SEED_BASE and not training & (tune | val)
