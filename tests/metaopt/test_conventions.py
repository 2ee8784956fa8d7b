"""The learned optimizer keeps torch.optim's conventions (lr multiplier, decoupled weight decay, group keys,
state_dict), guards against non-finite updates, and ships a rule that loads by name."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import envs
import metaopt
from metaopt import CheckpointError, LearnedOptimizer
from metaopt.rules import MLPConfig, PerParameterMLP
from metaopt.rules.mlp import adam_weights


def setup(seed: int = 0, **options: float) -> tuple[torch.nn.Module, LearnedOptimizer, envs.Task]:
    task = envs.make_task("digits_mlp", width=6)
    model = task.init_model(seed)
    rule = PerParameterMLP(MLPConfig(normalize=False))
    adam_weights(rule, 0.01)
    return model, LearnedOptimizer(model.parameters(), rule=rule, **options), task


def step(model: torch.nn.Module, opt: LearnedOptimizer, task: envs.Task, batch: envs.Batch) -> list[torch.Tensor]:
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    task.loss(model, batch).backward()
    opt.step()
    return [p.detach() - b for p, b in zip(model.parameters(), before, strict=True)]


def test_a_scheduler_halving_lr_halves_the_update_of_a_step() -> None:
    model, opt, task = setup()
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    batches = task.batches(0)
    step(model, opt, task, next(batches))  # some rule state first
    twin_model = copy.deepcopy(model)
    twin = LearnedOptimizer(twin_model.parameters(), rule=opt.rule)
    twin.load_state_dict(opt.state_dict())  # the same rule state, lr 1
    scheduler.step()
    assert opt.param_groups[0]["lr"] == 0.5 and twin.param_groups[0]["lr"] == 1.0
    batch = next(batches)
    half, full = step(model, opt, task, batch), step(twin_model, twin, task, batch)
    for h, f in zip(half, full, strict=True):
        assert torch.allclose(h, 0.5 * f, rtol=1e-4, atol=1e-7)  # float32 rounding of p + update
        assert f.abs().max() > 1e-3


def test_weight_decay_is_decoupled_and_per_group() -> None:
    model, opt, task = setup()
    decayed_model = copy.deepcopy(model)
    weights, biases = [p for n, p in decayed_model.named_parameters() if "weight" in n], []
    biases = [p for n, p in decayed_model.named_parameters() if "bias" in n]
    decayed = LearnedOptimizer([{"params": weights, "weight_decay": 0.1, "lr": 0.5}, {"params": biases}],
                               rule=opt.rule)  # fmt: skip
    batch = next(task.batches(0))
    start = {n: p.detach().clone() for n, p in decayed_model.named_parameters()}
    plain = dict(zip([n for n, _ in model.named_parameters()], step(model, opt, task, batch), strict=True))
    step(decayed_model, decayed, task, batch)
    for name, p in decayed_model.named_parameters():
        lr, wd = (0.5, 0.1) if "weight" in name else (1.0, 0.0)
        expected = start[name] * (1 - lr * wd) + lr * plain[name]
        assert torch.allclose(p.detach(), expected, rtol=1e-5, atol=1e-7), name


def test_unknown_group_keys_and_bad_values_are_refused_naming_the_valid_ones() -> None:
    model, opt, _ = setup()
    with pytest.raises(ValueError, match="params, lr, weight_decay; unknown key\\(s\\): momentum"):
        LearnedOptimizer([{"params": list(model.parameters()), "momentum": 0.9}], rule=opt.rule)
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        LearnedOptimizer(model.parameters(), rule=opt.rule, weight_decay=-1.0)
    with pytest.raises(ValueError, match="lr must be"):
        LearnedOptimizer(model.parameters(), rule=opt.rule, lr=float("nan"))


def test_state_dict_round_trips_groups_and_rule_state() -> None:
    model, opt, task = setup(lr=0.7, weight_decay=0.01)
    batches = task.batches(1)
    step(model, opt, task, next(batches))
    clone = copy.deepcopy(model)
    restored = LearnedOptimizer(clone.parameters(), rule=opt.rule)
    restored.load_state_dict(opt.state_dict())
    assert restored.param_groups[0]["lr"] == 0.7 and restored.param_groups[0]["weight_decay"] == 0.01
    batch = next(batches)
    for a, b in zip(step(model, opt, task, batch), step(clone, restored, task, batch), strict=True):
        assert torch.equal(a, b)


def test_a_non_finite_update_is_skipped_and_counted() -> None:
    model, opt, task = setup()
    step(model, opt, task, next(task.batches(0)))
    before = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict()["state"])
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    after = opt.state_dict()["state"]
    assert all(torch.equal(after[i][k], state[i][k]) for i in state for k in state[i] if torch.is_tensor(state[i][k]))


def test_the_shipped_rule_loads_by_name_and_trains_digits() -> None:
    assert "family-mlp-v0" in metaopt.list_pretrained()
    task = envs.make_task("digits_mlp")
    model = task.init_model(1000)
    opt = LearnedOptimizer(model.parameters(), checkpoint="family-mlp-v0")
    assert isinstance(opt.rule, PerParameterMLP)
    result = envs.fit(task, model=model, optimizer=opt, steps=100, evaluate=False, batches=task.batches(1000))
    assert not result.diverged and sum(result.losses[-10:]) / 10 < 0.15  # tuned Adam: 0.056 (docs/results.md)
    assert envs.make_optimizer("learned", task.init_model(0).parameters(), checkpoint="family-mlp-v0").rule
    with pytest.raises(CheckpointError, match="shipped rules: family-mlp-v0"):
        LearnedOptimizer(model.parameters(), checkpoint="no-such-rule")


def test_family_v1_loads_by_name_as_the_tiny_rule_of_recipe_v3_and_trains_digits() -> None:
    from metaopt.rules import TinyRule

    assert {"family-mlp-v0", "family-v1"} <= set(metaopt.list_pretrained())
    task = envs.make_task("digits_mlp", width=16, activation="tanh")  # a validation net of its recipe
    model = task.init_model(1000)
    opt = LearnedOptimizer(model.parameters(), checkpoint="family-v1")
    assert isinstance(opt.rule, TinyRule)
    cfg = opt.rule.config
    assert cfg.mup_cap and cfg.scheduler and cfg.learned_tensors == "all" and opt.rule.schedule is not None
    result = envs.fit(task, model=model, optimizer=opt, steps=200, evaluate=False, batches=task.batches(1000))
    assert (
        not result.diverged and sum(result.losses[-10:]) / 10 < 0.03
    )  # it reaches 0.014; tuned Adam 0.015 (docs/results.md)


def test_family_v2_loads_by_name_as_the_orthogonalizing_tiny_rule_and_trains_digits() -> None:
    from metaopt.rules import TinyRule

    assert "family-v2" in metaopt.list_pretrained()
    task = envs.make_task("digits_mlp", width=16, activation="tanh")  # a validation net of its recipe
    model = task.init_model(1000)
    opt = LearnedOptimizer(model.parameters(), checkpoint="family-v2")
    assert isinstance(opt.rule, TinyRule)
    cfg = opt.rule.config
    assert cfg.orthogonalize and cfg.mup_cap and cfg.scheduler and cfg.learned_tensors == "all"
    result = envs.fit(task, model=model, optimizer=opt, steps=200, evaluate=False, batches=task.batches(1000))
    final = sum(result.losses[-10:]) / 10
    assert not result.diverged and final < 0.011, final  # it reaches 0.0091; family-v1 0.014, tuned Adam 0.015


def test_options_replace_a_shipped_rule_s_options_keep_its_weights_and_are_checked() -> None:
    model = envs.make_task("digits_mlp", width=6).init_model(0)
    plain = LearnedOptimizer(model.parameters(), checkpoint="family-v2")
    decayed = LearnedOptimizer(model.parameters(), checkpoint="family-v2",
                               options={"adapt_rate": 0.03, "weight_decay": 0.3})  # fmt: skip
    assert (decayed.rule.config.adapt_rate, decayed.rule.config.weight_decay) == (0.03, 0.3)
    assert plain.rule.config.weight_decay == 0.0 and plain.rule.config.orthogonalize
    assert decayed.rule.config.orthogonalize  # the rest as recorded
    for (name, a), b in zip(plain.rule.state_dict().items(), decayed.rule.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="no option bogus"):
        LearnedOptimizer(model.parameters(), checkpoint="family-v2", options={"bogus": 1})
    with pytest.raises(ValueError, match="weight_decay"):
        LearnedOptimizer(model.parameters(), checkpoint="family-v2", options={"weight_decay": -1})
    with pytest.raises(CheckpointError):
        LearnedOptimizer(model.parameters(), checkpoint="family-v2", options={"hidden_size": 4})  # other shapes
    with pytest.raises(ValueError, match="options"):
        LearnedOptimizer(model.parameters(), rule=plain.rule, options={"weight_decay": 0.3})


def test_family_v3_is_family_v2_s_weights_with_step_size_adaptation_decay_and_blocks_and_trains_digits() -> None:
    assert "family-v3" in metaopt.list_pretrained()
    v2, v3 = metaopt.load_net("family-v2"), metaopt.load_net("family-v3")
    assert (v3.config.adapt_rate, v3.config.weight_decay, v3.config.ns_block) == (0.03, 0.3, 256)
    assert dataclasses.replace(v3.config, adapt_rate=0.0, weight_decay=0.0, ns_block=0) == v2.config
    for (name, a), b in zip(v2.state_dict().items(), v3.state_dict().values()):
        assert torch.equal(a, b), name
    task = envs.make_task("digits_mlp", width=16, activation="tanh")  # a validation net of its recipe
    model = task.init_model(1000)
    opt = LearnedOptimizer(model.parameters(), checkpoint="family-v3")
    result = envs.fit(task, model=model, optimizer=opt, steps=200, evaluate=False, batches=task.batches(1000))
    final = sum(result.losses[-10:]) / 10
    assert not result.diverged and final < 0.011, final
