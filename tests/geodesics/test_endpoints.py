"""The one endpoint trainer: models trained into the level set, alone or as one stack, with the optimizer given."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import envs
import envs.training.optim
from envs.task import Recipe
from envs.training.fit import fit
from geodesics import ParamSpace, ThresholdNotReached, train_to_threshold
from geodesics.beads import BeadSchedule, train_beads
from geodesics.endpoints import train_endpoints

SEEDS = [0, 1]


def poly_cubic(recipe: Recipe) -> ParamSpace:
    task = envs.make_task("poly_cubic")
    task.recipe = recipe  # type: ignore[misc]  # this instance only
    return ParamSpace(task)


def test_train_to_threshold_reaches_it_or_says_what_to_change() -> None:
    task = envs.make_task("digits_mlp")
    theta = train_to_threshold(task, 0, 0.5)
    assert ParamSpace(task).eval_loss(theta) <= 0.5
    with pytest.raises(ThresholdNotReached, match=r"\(best .*\) after 20 steps .* Raise the step budget"):
        train_to_threshold(task, 0, 0.01, max_steps=20)


def test_a_stack_trains_with_the_recipe_optimizer_not_adam() -> None:
    space = poly_cubic(Recipe("momentum", 0.05, 100))
    trained = train_endpoints(space, SEEDS, 0.1, max_steps=300, shared_batches=5)
    inits = torch.stack([space.flatten(space.task.init_model(s)) for s in SEEDS])
    targets = torch.full((2,), 0.1, dtype=torch.float64)
    run = {name: train_beads(space, inits, targets, BeadSchedule(300, 0.05, optimizer=name), seed=5).beads
           for name in ("momentum", "adam")}  # fmt: skip
    assert bool((trained.steps > 0).all())
    assert torch.equal(trained.thetas, run["momentum"]) and not torch.equal(trained.thetas, run["adam"])
    assert torch.equal(trained.reached, trained.losses <= 0.1)


@pytest.fixture
def adamax() -> Iterator[None]:
    """``adamax`` registered for one test (it has no batched twin), unregistered afterwards."""
    envs.training.optim.register_optimizer("adamax", torch.optim.Adamax)
    yield
    envs.training.optim.OPTIMIZERS.unregister("adamax")


def test_an_optimizer_without_a_batched_twin_trains_each_model_alone(adamax: None) -> None:
    space = poly_cubic(Recipe("adamax", 0.05, 100))
    trained = train_endpoints(space, SEEDS, 0.1, max_steps=200, shared_batches=5)
    for row, seed in enumerate(SEEDS):
        alone = fit(space.task, seed, optimizer="adamax", lr=0.05, steps=200, eval_every=10, stop_below=0.1)
        assert torch.equal(trained.thetas[row], space.flatten(alone.model))
        assert int(trained.steps[row]) == alone.steps and float(trained.losses[row]) == alone.eval_history[-1][1]
