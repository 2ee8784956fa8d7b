"""Checks that need the registries, the tasks or the files run before anything is written: exit 2, one message."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest

from envs.errors import ConfigError
from envs.gym import LRControlEnv
from envs.tooling.config import load_config
from geodesics.cli import main as geodesics_main
from metaopt.cli import main as metaopt_main
from metaopt.commands.train import divergence_warning
from metaopt.rules import make_rule
from metaopt.training import TrainConfig
from metaopt.training.preflight import _check_population, _largest_optimizee, memory_limit_bytes, population_bytes

TRAIN = ["train", "metaopt/quadratic.yaml"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [*TRAIN, "estimator=es", "estimator.options={pairs: 1000000000000}"],
            "bad value for estimator.options.pairs: 1000000000000 antithetic pairs need at least",
        ),
        (
            ["train", "metaopt/family.yaml", "tasks=[{name: digits_mlp, options: {bogus: 1}}]"],
            "bad value for tasks.0.options: unknown option(s) 'bogus' for task 'digits_mlp'",
        ),
        (
            ["train", "metaopt/digits_mlp.yaml", "objective.name=eval_loss"],
            "bad value for tasks.0.options.valid_size: objective.name=eval_loss scores held-out batches",
        ),
        ([*TRAIN, "objective.name=teacher"], "bad value for targets: objective.name=teacher imitates target points"),
        ([*TRAIN, "objective.name=geodesic"], "bad value for targets: objective.name=geodesic imitates target points"),
        ([*TRAIN, "objective.name=geodesic", "targets=/nonexistent/run"], "bad value for targets: no target shards in"),
        (
            ["targets", "metaopt/targets/poly_cubic.yaml", "level=descent", "dss.finder=neb"],
            "bad value for dss.finder.name: dss.finder.name must be one of constrained, greedy",
        ),
    ],
)
def test_metaopt_refuses_before_writing(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert metaopt_main([*argv, f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize("command", ["connect", "compare-paths", "sweep"])
def test_an_alignment_the_model_cannot_take_is_refused_before_endpoints_are_trained(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert geodesics_main([command, "task.name=charlm", "align=weight_matching", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert "bad value for align: align=weight_matching" in err and "charlm" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_population_that_fits_is_accepted_and_one_pair_more_than_the_limit_is_not() -> None:
    limit = memory_limit_bytes()
    per_pair = population_bytes(1, 1000, 100, vmap=True)
    assert population_bytes(10, 1000, 100, vmap=True) == 10 * per_pair  # linear in pairs
    assert population_bytes(10, 1000, 100, vmap=False) == 8 * 10 * 1000  # the noise alone
    fits = limit // per_pair
    assert population_bytes(fits, 1000, 100, vmap=True) <= limit < population_bytes(fits + 1, 1000, 100, vmap=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"horizon": -5}, "horizon must be an integer >= steps_per_action (10)"),
        ({"horizon": 0}, "horizon must be an integer >= steps_per_action (10)"),
        ({"horizon": 5}, "horizon must be an integer >= steps_per_action (10)"),
        ({"horizon": 12.5}, "horizon must be an integer"),
        ({"steps_per_action": 0}, "steps_per_action must be an integer >= 1"),
        ({"steps_per_action": 2.5}, "steps_per_action must be an integer >= 1"),
    ],
)
def test_the_lr_env_validates_its_arguments(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LRControlEnv("quadratic", **options)
    with pytest.raises(ValueError, match="horizon must be"):
        gym.make("metaopt/Quadratic-LR-v0", horizon=-5)


def test_the_lr_env_keeps_a_valid_horizon_and_defaults_to_fifty_actions() -> None:
    assert LRControlEnv("quadratic", horizon=30, steps_per_action=10).horizon == 30
    assert LRControlEnv("quadratic", steps_per_action=4).horizon == 200


def _far_worse(**overrides: object) -> str | None:
    cfg = load_config(TrainConfig, "metaopt/quadratic.yaml", [f"{k}={v}" for k, v in overrides.items()])
    metrics = {"far_worse_than_adam": True, "best_val_loss": 5.0, "adam_val_loss": 0.1}
    return divergence_warning(cfg, metrics)


def test_the_divergence_warning_names_a_short_run_as_the_likely_cause() -> None:
    short = _far_worse(episodes=2, steps=100, truncation=20)  # 10 meta-steps
    assert short is not None and "the run was short (2 episodes, 10 meta-steps)" in short
    assert short.index("the run was short") < short.index("lower meta_lr")  # the likely cause first
    long = _far_worse(episodes=400, steps=100, truncation=20)
    assert long is not None and "lower meta_lr (now" in long and "short" not in long
    edge = _far_worse(episodes=20, steps=100, truncation=20)  # exactly 100 meta-steps: not short
    assert edge is not None and "short" not in edge
    assert (
        divergence_warning(load_config(TrainConfig, "metaopt/quadratic.yaml"), {"far_worse_than_adam": False}) is None
    )


def test_a_stacked_population_counts_the_whole_meta_batch() -> None:
    """population=stack may run every optimizee's particles in one call: the check counts meta_batch times the pairs."""

    def config(population: str, pairs: int) -> TrainConfig:
        return load_config(TrainConfig, "metaopt/quadratic.yaml", [
            "estimator=es", f"estimator.options={{pairs: {pairs}, population: {population}}}", "meta_batch=4",
        ])  # fmt: skip

    base = config("vmap", 1)
    rule_params = sum(p.numel() for p in make_rule(base.rule.name, base.rule_config()).parameters())
    largest = _largest_optimizee(base.tasks[0])
    fits = memory_limit_bytes() // population_bytes(1, rule_params, largest, vmap=True)
    _check_population(config("vmap", fits // 2))  # fits alone
    with pytest.raises(ConfigError, match="bad value for estimator.options.pairs"):
        _check_population(config("stack", fits // 2))  # four optimizees of them do not
