"""The ``log`` option of the ``loss`` and ``eval_loss`` meta-objectives: sum_s w_s log(f_s + 1e-12)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import envs
from envs.errors import ConfigError
from envs.tasks.quadratic import QuadraticOptions, QuadraticTask
from envs.tooling.config import load_config
from metaopt import TrainConfig, make_objective, start_episode, unroll
from metaopt.inner import Trajectory
from metaopt.objectives import LossOptions, ObjectiveConfig, heldout_loss, optimizee_loss
from metaopt.rules import TinyConfig
from tests.metaopt.rules.test_tiny import perturbed
from tests.metaopt.sizes import TINY_TRAIN


def scaled_quadratic(scale: float) -> QuadraticTask:
    """The quadratic task with its loss multiplied by ``scale`` (its instances too)."""

    class Scaled(QuadraticTask):
        def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
            return scale * super().criterion(outputs, targets)

        def instance(self, seed: int) -> QuadraticTask:
            return Scaled(dataclasses.replace(self.options, data_seed=seed), device=self.device, dtype=self.dtype)

    return Scaled(QuadraticOptions(dim=5, init_std=0.5), dtype=torch.float64)


def meta_gradient(objective: Callable[[Trajectory], Tensor], scale: float) -> list[Tensor]:
    rule = perturbed(TinyConfig(scheduler=True, step_size=0.05))
    trajectory = unroll(start_episode(scaled_quadratic(scale), 3, rule, held_out=True), 6, first_order=False)
    weights = list(rule.parameters())
    grads = torch.autograd.grad(objective(trajectory), weights, allow_unused=True)  # the scheduler's bias: unused
    return [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads, strict=True)]


def test_the_log_objective_is_the_weighted_sum_of_the_losses_logarithms() -> None:
    task = envs.make_task("digits_mlp", width=8, valid_size=256)
    rule = perturbed(TinyConfig()).float()
    trajectory = unroll(start_episode(task, 3, rule, held_out=True), 4)
    assert trajectory.valid_losses is not None
    weights = [0.5, 1.0, 2.0, 3.0]
    train, valid = trajectory.losses[1:].detach(), trajectory.valid_losses.detach()
    for name, losses in (("loss", train), ("eval_loss", valid)):
        config = ObjectiveConfig(name, {"log": True}, loss_weights=weights)
        expected = sum(w * math.log(float(f) + 1e-12) for w, f in zip(weights, losses, strict=True))
        assert float(make_objective(config)(trajectory).detach()) == pytest.approx(expected, rel=1e-6)
        plain = sum(w * float(f) for w, f in zip(weights, losses, strict=True))  # the default is unchanged
        value = make_objective(ObjectiveConfig(name, loss_weights=weights))(trajectory)
        assert float(value.detach()) == pytest.approx(plain)
    assert ObjectiveConfig("eval_loss").config_as(LossOptions) == LossOptions(log=False)


def test_with_log_the_meta_gradient_does_not_depend_on_the_loss_scale() -> None:
    """A scale-free rule takes the same steps whatever the loss's scale; log makes the meta-gradient scale-free too."""
    log = make_objective(ObjectiveConfig("loss", {"log": True}))
    held_out_log = make_objective(ObjectiveConfig("eval_loss", {"log": True}))
    plain = make_objective(ObjectiveConfig("loss"))
    for objective in (log, held_out_log):
        base, scaled = meta_gradient(objective, 1.0), meta_gradient(objective, 1000.0)
        assert max(float(g.abs().max()) for g in base) > 1e-4  # the rule's weights are reached
        for a, b in zip(base, scaled, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)
    base, scaled = meta_gradient(plain, 1.0), meta_gradient(plain, 1000.0)  # without it: a thousand times larger
    for a, b in zip(base, scaled, strict=True):
        torch.testing.assert_close(1000.0 * a, b, rtol=1e-7, atol=1e-12)


def trajectory_of(losses: list[float]) -> Trajectory:
    values = torch.tensor(losses, dtype=torch.float64)
    return Trajectory(values, torch.zeros(len(losses), 1), 0, None, values[1:].clone())


def test_a_zero_loss_scores_the_floor_a_negative_one_is_refused_and_nan_goes_through() -> None:
    assert float(optimizee_loss(trajectory_of([1.0, 0.0, 1.0]), log=True)) == pytest.approx(math.log(1e-12))
    assert float(heldout_loss(trajectory_of([1.0, 0.0, 1.0]), log=True)) == pytest.approx(math.log(1e-12))
    with pytest.raises(ValueError, match=r"objective\.options\.log .* must not be negative; a step's loss was -0\.25"):
        optimizee_loss(trajectory_of([1.0, 0.5, -0.25]), log=True)
    with pytest.raises(ValueError, match="must not be negative"):
        heldout_loss(trajectory_of([1.0, -0.5, 0.5]), log=True)
    assert float(optimizee_loss(trajectory_of([-3.0, 0.5, 0.5]))) == 1.0  # without log a negative loss is fine
    assert math.isnan(float(optimizee_loss(trajectory_of([1.0, 0.5, math.nan]), log=True)))  # a diverged truncation


def test_a_run_with_the_log_objective_trains_and_logs_finite_meta_losses(tmp_path) -> None:  # noqa: ANN001
    from metaopt.commands.train import run_train

    cfg = load_config(
        TrainConfig, "metaopt/quadratic.yaml",
        [*TINY_TRAIN, f"out={tmp_path / 'run'}", "objective.options.log=true", "episodes=2"],
    )  # fmt: skip
    assert cfg.objective.options == {"log": True}
    run_train(cfg)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    with pytest.raises(ConfigError, match="objective 'loss' has no option logs; its options: log"):
        load_config(TrainConfig, "metaopt/quadratic.yaml", [*TINY_TRAIN, "objective.options.logs=true"])
