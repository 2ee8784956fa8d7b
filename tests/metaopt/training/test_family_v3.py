"""The pieces of recipe v3: weight reparameterization (same function, scaled weights, gradients over c, drawn per
layer and reproducibly), the teacher-student task's held-out sample, and the recipe's config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import envs
from envs.errors import ConfigError, TaskError
from envs.tooling.config import load_config
from metaopt import TrainConfig, start_episode, unroll
from metaopt.objectives import ObjectiveConfig
from metaopt.rules import TinyRule
from metaopt.training.augment import InputScaled, reparameterizable_layers, reparameterize_weights
from metaopt.training.schedule import FreshEpisodes
from tests.metaopt.sizes import TINY_TRAIN


@pytest.mark.parametrize(("name", "options"), [("digits_mlp", {"width": 6, "depth": 2}), ("digits_cnn", {})])
def test_reparameterized_weights_compute_the_same_function_with_scaled_weights_and_gradients(name, options) -> None:
    task = envs.make_task(name, **options)
    rule = TinyRule()
    plain, scaled = start_episode(task, 3, rule), start_episode(task, 3, rule)
    layers = len(reparameterizable_layers(plain.model))
    assert layers >= 3 if name == "digits_mlp" else layers >= 2  # the convnet's convolution and readout are both met
    factors = [2.0, 0.5, 4.0, 0.25][:layers]
    reparameterize_weights(scaled, factors)
    assert sum(isinstance(m, InputScaled) for m in scaled.model.modules()) == layers
    params = [list(inner.model.parameters()) for inner in (plain, scaled)]
    assert [p.shape for p in params[0]] == [p.shape for p in params[1]]  # same tensors in the same order
    assert list(scaled.optimizer.param_groups[0]["params"]) == params[1]
    weights = [m.layer.weight for m in scaled.model.modules() if isinstance(m, InputScaled)]
    originals = [layer.weight for _, _, layer in reparameterizable_layers(plain.model)]
    for weight, original, factor in zip(weights, originals, factors):
        torch.testing.assert_close(weight, factor * original)
    batch = next(plain.batches)
    losses = [task.loss(inner.model, batch) for inner in (plain, scaled)]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    grads = [dict(zip([id(p) for p in ps], torch.autograd.grad(loss, ps))) for loss, ps in zip(losses, params)]
    for weight, original, factor in zip(weights, originals, factors):
        torch.testing.assert_close(grads[1][id(weight)], grads[0][id(original)] / factor, rtol=1e-4, atol=1e-7)
    biases = [
        (m.layer.bias, layer.bias)
        for m, (_, _, layer) in zip(
            [m for m in scaled.model.modules() if isinstance(m, InputScaled)], reparameterizable_layers(plain.model)
        )
    ]
    for bias, original in biases:
        torch.testing.assert_close(bias, original)  # biases are not reparameterized
    with pytest.raises(ValueError, match="factors"):
        reparameterize_weights(start_episode(task, 3, rule), factors[:-1])
    with pytest.raises(ValueError, match="first step"):
        scaled.step = 1
        reparameterize_weights(scaled, factors)


def test_a_reparameterized_optimizee_unrolls_and_the_tiny_rule_moves_its_stored_weight_as_far() -> None:
    task = envs.make_task("digits_mlp", width=6, depth=2, valid_size=200)
    rule = TinyRule()
    plain, scaled = start_episode(task, 1, rule, held_out=True), start_episode(task, 1, rule, held_out=True)
    reparameterize_weights(scaled, [1.0, 8.0, 1.0])
    starts = [[p.detach().clone() for p in inner.model.parameters()] for inner in (plain, scaled)]
    trajectories = [unroll(inner, 1) for inner in (plain, scaled)]
    trajectories[1].losses[-1].backward()
    assert rule.log_step.grad is not None and torch.isfinite(rule.log_step.grad)
    moves = [
        [p.detach() - s for p, s in zip(inner.model.parameters(), start)]
        for inner, start in zip((plain, scaled), starts)
    ]
    # the tiny rule's inputs do not see c and its step is normalised per tensor: the first step of the stored 8x
    # hidden weight is the unscaled one's, so the function moves 1/8 as far in that layer
    for a, b in zip(*moves):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
    assert float(moves[1][2].abs().max()) > 0
    assert float(trajectories[0].losses[-1].detach()) != float(trajectories[1].losses[-1].detach())


def _config(tmp_path: Path, *overrides: str) -> TrainConfig:
    family = "tasks=[{name: digits_mlp, options: {width: 4, depth: 2}}, {name: quadratic, options: {dim: 4}}]"
    return load_config(TrainConfig, "metaopt/quadratic.yaml", [*TINY_TRAIN, f"out={tmp_path}", family, *overrides])


def test_weight_factors_are_drawn_per_layer_reproducibly_and_leave_the_other_draws(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "param_scales=[0.5, 2.0]", "grad_scales=[0.1, 10.0]", "task_sampling=cycle")
    plain = _config(tmp_path, "grad_scales=[0.1, 10.0]", "task_sampling=cycle")
    tasks = [envs.make_task(t.name, **t.options) for t in cfg.tasks]
    schedule, again, reference = FreshEpisodes(cfg, tasks), FreshEpisodes(cfg, tasks), FreshEpisodes(plain, tasks)
    drawn = [schedule.param_scales_of(e, 0, 3) for e in range(8)]
    assert {f for d in drawn for f in d} == {0.5, 2.0}
    assert drawn == [again.param_scales_of(e, 0, 3) for e in range(8)]
    assert reference.param_scales_of(0, 0, 3) == [1.0, 1.0, 1.0]
    # a stream of its own: the first layer's factor does not follow the slot's gradient factor
    assert [d[0] == 2.0 for d in drawn] != [schedule.grad_scale_of(e, 0) == 10.0 for e in range(8)]
    assert [schedule.grad_scale_of(e, s) for e in range(8) for s in range(2)] == [
        reference.grad_scale_of(e, s) for e in range(8) for s in range(2)
    ]
    rule = TinyRule()
    for episode in range(3):
        inners = schedule.inners(episode, rule)
        mlp = inners[0].model  # slot 0: the MLP (wrapped for the gradient factor); slot 1: the quadratic, no layers
        wrapped = [m.scale for m in mlp.modules() if isinstance(m, InputScaled)]
        expected = [f for f in schedule.param_scales_of(episode, 0, 3) if f != 1.0]
        assert wrapped == expected
        assert not any(isinstance(m, InputScaled) for m in inners[1].model.modules())


@pytest.mark.parametrize("override", ["param_scales=[1.0, 0.0]", "param_scales=[-2.0]"])
def test_bad_weight_factors_name_the_key(tmp_path: Path, override: str) -> None:
    with pytest.raises(ConfigError, match="param_scales"):
        _config(tmp_path, override)


def test_the_teacher_student_held_out_sample_is_a_third_sample_of_the_same_teacher() -> None:
    task = envs.make_task("teacher_student", valid_points=300, data_seed=2)
    x_train, y_train = task.train_data()
    x_eval, _ = task.eval_data()
    x_valid, y_valid = next(task.valid_batches(0))
    assert x_valid.shape == (300, 8) and y_valid.shape == (300, 1)
    assert not torch.equal(x_valid, x_train[:300]) and not torch.equal(x_valid, x_eval[:300])
    scale = task._teacher_outputs(x_train.double())[0, 0] / y_train[0, 0].double()  # noise 0: targets = teacher / scale
    torch.testing.assert_close(y_valid.double(), task._teacher_outputs(x_valid.double()) / scale)
    unchanged = envs.make_task("teacher_student", data_seed=2)
    assert torch.equal(unchanged.train_data()[0], x_train) and torch.equal(
        unchanged.eval_data()[1], task.eval_data()[1]
    )
    with pytest.raises(TaskError, match="held-out"):
        next(unchanged.valid_batches(0))
    noisy = envs.make_task("teacher_student", valid_points=2000, noise=0.5)
    residual = next(noisy.valid_batches(0))[1].double() - noisy._teacher_outputs(
        next(noisy.valid_batches(0))[0].double()
    ) / (noisy._teacher_outputs(noisy.train_data()[0].double()).pow(2).mean().sqrt())
    assert 0.45 < float(residual.std()) < 0.55  # the label noise of the training sample, at its level
    with pytest.raises(ValueError, match="valid_points"):
        envs.make_task("teacher_student", valid_points=-1)


def test_the_family_v3_recipe_loads() -> None:
    cfg = load_config(TrainConfig, "metaopt/family_v3.yaml")
    assert cfg.rule.name == "tiny" and cfg.rule_config().learned_tensors == "all"
    assert cfg.truncation == 50 and max(cfg.horizons) == 1000
    assert {t.name for t in cfg.tasks} == {"digits_mlp", "digits_cnn", "teacher_student"}


def test_the_family_v4_recipe_is_v3_with_orthogonalized_matrices() -> None:
    v3 = load_config(TrainConfig, "metaopt/family_v3.yaml")
    v4 = load_config(TrainConfig, "metaopt/family_v4.yaml")
    assert v4.rule_config().orthogonalize and not v3.rule_config().orthogonalize
    assert dataclasses.replace(v4.rule_config(), orthogonalize=False) == v3.rule_config()
    assert dataclasses.replace(v4, rule=v3.rule, name=v3.name) == v3  # nothing else differs


def test_the_family_v5_recipe_is_v4_with_step_size_adaptation_and_weight_decay() -> None:
    v4 = load_config(TrainConfig, "metaopt/family_v4.yaml")
    v5 = load_config(TrainConfig, "metaopt/family_v5.yaml")
    assert (v5.rule_config().adapt_rate, v5.rule_config().weight_decay) == (0.03, 0.3)
    assert dataclasses.replace(v5.rule_config(), adapt_rate=0.0, weight_decay=0.0) == v4.rule_config()
    assert dataclasses.replace(v5, rule=v4.rule, name=v4.name) == v4  # nothing else differs


def test_the_family_v6_recipe_is_v4_orthogonalizing_only_the_hidden_matrices() -> None:
    v4 = load_config(TrainConfig, "metaopt/family_v4.yaml")
    v6 = load_config(TrainConfig, "metaopt/family_v6.yaml")
    assert v6.rule_config().ns_matrices == "hidden" and v4.rule_config().ns_matrices == "all"
    assert dataclasses.replace(v6.rule_config(), ns_matrices="all") == v4.rule_config()
    assert dataclasses.replace(v6, rule=v4.rule, name=v4.name) == v4  # nothing else differs


def test_the_family_v7_recipe_is_v4_keeping_the_average_of_its_weights() -> None:
    v4 = load_config(TrainConfig, "metaopt/family_v4.yaml")
    v7 = load_config(TrainConfig, "metaopt/family_v7.yaml")
    assert v7.meta_average == 0.98 and v4.meta_average == 0.0
    assert dataclasses.replace(v7, meta_average=0.0, name=v4.name) == v4  # nothing else differs


def test_the_family_v8_recipe_is_v7_on_the_logarithm_of_the_held_out_loss() -> None:
    v7 = load_config(TrainConfig, "metaopt/family_v7.yaml")
    v8 = load_config(TrainConfig, "metaopt/family_v8.yaml")
    assert v8.objective == ObjectiveConfig("eval_loss", {"log": True}) and v7.objective == ObjectiveConfig("eval_loss")
    assert dataclasses.replace(v8, objective=v7.objective, name=v7.name) == v7  # nothing else differs


def test_the_family_v9_recipe_is_v7_on_the_logarithm_of_the_training_loss() -> None:
    v7 = load_config(TrainConfig, "metaopt/family_v7.yaml")
    v9 = load_config(TrainConfig, "metaopt/family_v9.yaml")
    assert v9.objective == ObjectiveConfig("loss", {"log": True})
    assert dataclasses.replace(v9, objective=v7.objective, name=v7.name) == v7  # nothing else differs


def test_the_family_v10_recipe_is_v7_for_half_the_episodes_from_family_v3s_weights() -> None:
    from metaopt import load_net
    from metaopt.rules import make_rule

    v7 = load_config(TrainConfig, "metaopt/family_v7.yaml")
    v10 = load_config(TrainConfig, "metaopt/family_v10.yaml")
    assert v10.rule_config().init_from == "family-v3" and v10.episodes == 40
    assert dataclasses.replace(v10.rule_config(), init_from=None) == v7.rule_config()
    assert dataclasses.replace(v10, rule=v7.rule, episodes=v7.episodes, name=v7.name) == v7  # nothing else differs
    start, shipped = make_rule(v10.rule.name, v10.rule_config()).state_dict(), load_net("family-v3").state_dict()
    assert start.keys() == shipped.keys() and all(torch.equal(start[k], shipped[k]) for k in shipped)


@pytest.mark.parametrize(
    "recipe",
    ["family_v3", "family_v4", "family_v5", "family_v6", "family_v7", "family_v8", "family_v9", "family_v10"],
)
def test_no_task_of_the_held_out_suite_is_a_member_of_the_family(recipe: str) -> None:
    import itertools

    from metaopt.compare.config import CompareConfig

    def options(name: str, given: dict) -> dict:
        spec = envs.make_task(name, **given).spec["options"]
        return {k: v for k, v in spec.items() if k != "valid_size"}  # the held-out split's size is no other task

    family = load_config(TrainConfig, f"metaopt/{recipe}.yaml")
    members = []
    for task in family.tasks:
        keys = list(task.choices)
        for values in itertools.product(*(task.choices[k] for k in keys)):
            members.append((task.name, options(task.name, {**task.options, **dict(zip(keys, values))})))
    assert len(members) > 200
    suite = load_config(CompareConfig, "compare/heldout_suite.yaml")
    for label, task in suite.tasks.items():
        assert (task.name, options(task.name, task.options)) not in members, label
    assert ("digits_mlp", options("digits_mlp", {"width": 16, "activation": "tanh"})) in members  # the check can match
    assert max(family.horizons) < suite.tasks["horizon2500"].steps
