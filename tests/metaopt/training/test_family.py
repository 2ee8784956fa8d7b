"""Task-family meta-training: members and choices drawn per slot, start offsets, the held-out meta-objective."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

import envs
from envs.errors import ConfigError, TaskError
from envs.tooling.config import load_config
from metaopt import CoordinateLSTM, LSTMConfig, TrainConfig, make_objective, start_episode, unroll
from metaopt.commands.train import resume_config, run_train
from metaopt.inner import advance
from metaopt.objectives import ObjectiveConfig, heldout_loss, optimizee_loss
from metaopt.outer.es import rollout
from metaopt.training.schedule import FreshEpisodes
from tests.metaopt.sizes import TINY_TRAIN

FAMILY = (
    "tasks=[{name: quadratic, options: {dim: 4}}, "
    "{name: quadratic, options: {dim: 3}, choices: {dim: [2, 5], init_std: [0.01, 0.1]}}]"
)


def config(tmp_path: Path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, "metaopt/quadratic.yaml", [*TINY_TRAIN, f"out={tmp_path / 'run'}", *overrides])


def schedule(cfg: TrainConfig) -> FreshEpisodes:
    tasks = [envs.make_task(t.name, **t.options) for t in cfg.tasks]
    return FreshEpisodes(cfg, tasks)


def rows(data: tuple[torch.Tensor, torch.Tensor]) -> set[bytes]:
    return {row.numpy().tobytes() for row in data[0]}


def test_the_held_out_split_is_disjoint_from_training_and_evaluation() -> None:
    plain, split = envs.make_task("digits_mlp"), envs.make_task("digits_mlp", valid_size=200)
    train, held_out = split._data()[0], split._data()[2]
    assert held_out is not None and len(held_out[1]) == 200
    assert len(train[1]) + 200 == len(plain._data()[0][1])
    assert torch.equal(split.eval_data()[0], plain.eval_data()[0])  # the evaluation set does not move
    seen = set().union(*(rows(next(split.batches(0))) for _ in range(12)))  # > one epoch of training batches
    valid = rows(next(split.valid_batches(0)))
    assert seen <= rows(train) and valid <= rows(held_out) and not (valid & rows(train))
    with pytest.raises(TaskError, match="valid_size"):
        plain.valid_batches(0)
    with pytest.raises(TaskError, match="valid_size"):
        envs.make_task("digits_cnn").valid_batches(0)
    quadratic = envs.make_task("quadratic")  # nothing to hold out: its held-out loss is its loss
    assert all(torch.equal(a, b) for a, b in zip(next(quadratic.valid_batches(0)), quadratic.problem, strict=True))
    with pytest.raises(TaskError, match="0 <= valid_size < 1297"):
        envs.make_task("digits_mlp", valid_size=1297).batches(0)


def test_cycle_without_choices_is_the_family_in_turn(tmp_path: Path) -> None:
    cfg = config(tmp_path, "meta_batch=4", "tasks=[{name: quadratic, options: {dim: 4}}, {name: quadratic}]")
    fresh = schedule(cfg)
    for episode in range(3):
        for slot in range(4):
            task, offset = fresh.task_of(episode, slot)
            assert task is fresh.tasks[slot % 2] and offset == 0


def test_random_sampling_draws_members_and_choices_reproducibly(tmp_path: Path) -> None:
    cfg = config(tmp_path, "meta_batch=4", "task_sampling=random", FAMILY)
    fresh, again = schedule(cfg), schedule(cfg)
    drawn = [fresh.task_of(e, s)[0] for e in range(30) for s in range(4)]
    assert [t.spec for t in drawn] == [again.task_of(e, s)[0].spec for e in range(30) for s in range(4)]
    members = Counter("drawn" if t.options.dim != 4 else "base" for t in drawn)
    assert members["base"] > 20 and members["drawn"] > 20  # both members drawn (120 draws, p = 1/2 each)
    chosen = Counter((t.options.dim, t.options.init_std) for t in drawn if t.options.dim != 4)
    assert set(chosen) == {(2, 0.01), (2, 0.1), (5, 0.01), (5, 0.1)}  # every combination of the choices
    assert len({id(t) for t in drawn if t.options.dim != 4}) == 4  # each drawn spec built once
    other = schedule(config(tmp_path, "meta_batch=4", "task_sampling=random", FAMILY, "seed=1"))
    assert [t.spec for t in drawn] != [other.task_of(e, s)[0].spec for e in range(30) for s in range(4)]


def test_start_offsets_advance_each_optimizee_by_its_drawn_steps(tmp_path: Path) -> None:
    cfg = config(tmp_path, "meta_batch=4", "start_offset=7")
    fresh = schedule(cfg)
    rule = CoordinateLSTM(LSTMConfig())
    inners = fresh.inners(0, rule)
    offsets = [fresh.task_of(0, slot)[1] for slot in range(4)]
    assert [inner.step for inner in inners] == offsets and len(set(offsets)) > 1 and max(offsets) <= 7
    for slot, inner in enumerate(inners):  # the same as starting the optimizee and advancing it by hand
        by_hand = start_episode(fresh.tasks[0], 1_000_000 + slot, rule)
        if offsets[slot]:
            advance(by_hand, offsets[slot])
        for a, b in zip(inner.model.parameters(), by_hand.model.parameters(), strict=True):
            assert torch.equal(a, b)


def test_a_share_of_the_slots_is_built_as_the_whole_meta_batch_builds_it(tmp_path: Path) -> None:
    """What a rank of a data-parallel run builds (its slots only): those slots' optimizees, bit for bit."""
    cfg = config(tmp_path, "meta_batch=4", "start_offset=7", "task_sampling=random", FAMILY)
    rule = CoordinateLSTM(LSTMConfig())
    for episode in range(2):
        whole = schedule(cfg).inners(episode, rule)
        share = schedule(cfg).inners(episode, rule, slots=range(1, 3))
        assert len(share) == 2
        for a, b in zip(share, whole[1:3], strict=True):
            assert a.step == b.step and a.task.spec == b.task.spec
            assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))


def test_the_offsets_go_to_the_advance_given(tmp_path: Path) -> None:
    cfg = config(tmp_path, "meta_batch=3", "start_offset=7")
    calls: list[list[int]] = []
    inners = schedule(cfg).inners(0, CoordinateLSTM(LSTMConfig()), advance=lambda _, i, c: calls.append(list(c)))
    assert calls == [[schedule(cfg).task_of(0, slot)[1] for slot in range(3)]]
    assert [inner.step for inner in inners] == [0, 0, 0]


def test_eval_loss_scores_each_iterate_on_a_held_out_batch() -> None:
    task = envs.make_task("digits_mlp", width=8, valid_size=256)
    rule = CoordinateLSTM(LSTMConfig(hidden_size=4))
    inner = start_episode(task, 3, rule, held_out=True)
    reference = start_episode(task, 3, rule, held_out=True)  # replays the same held-out stream
    trajectory = unroll(inner, 4)
    assert trajectory.valid_losses is not None and trajectory.valid_losses.shape == (4,)
    start = 0
    for s in range(1, 5):  # rebuild theta_{t+s} from the flat iterates and score it on the s-th held-out batch
        model = task.init_model(3)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(trajectory.iterates[s, start : start + p.numel()].view_as(p))
                start += p.numel()
        start = 0
        expected = task.loss(model, next(reference.valid_batches))
        assert torch.allclose(trajectory.valid_losses[s - 1], expected, atol=1e-6)
    objective = make_objective(ObjectiveConfig(name="eval_loss"))
    value = objective(trajectory)
    assert torch.allclose(value, heldout_loss(trajectory)) and not torch.allclose(value, optimizee_loss(trajectory))
    grads = torch.autograd.grad(value, list(rule.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)  # the held-out loss reaches the rule's weights
    with pytest.raises(ValueError, match="held-out"):
        heldout_loss(unroll(start_episode(task, 3, rule), 2))


def test_a_family_run_with_eval_loss_trains_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    family = "tasks=[{name: digits_mlp, options: {width: 6, valid_size: 200}, choices: {activation: [sigmoid, relu]}}]"
    common = [family, "task_sampling=random", "start_offset=3", "objective.name=eval_loss", "episodes=3"]
    common += ["rule.options.hidden_size=4", "val_every=3", "val_seeds=1"]
    a = assert_resumes_bit_for_bit(tmp_path, common)
    assert a["trainer"]["progress"]["meta_step"] == 3 * 2 and a["trainer"]["progress"]["skipped"] == 0


def assert_resumes_bit_for_bit(tmp_path: Path, overrides: list[str]) -> dict:
    """Train with ``overrides`` whole and interrupted after episode 1 then resumed; the two ``last.pt`` agree."""
    run_train(config(tmp_path / "a", *overrides))

    def stop(episode: int) -> None:
        if episode == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_train(config(tmp_path / "b", *overrides), callback=stop)
    run_train(resume_config(tmp_path / "b" / "run"))
    a, b = (
        torch.load(p / "run" / "checkpoints" / "last.pt", weights_only=True) for p in (tmp_path / "a", tmp_path / "b")
    )
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    return a


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("task_sampling=shuffle", "task_sampling"),
        ("start_offset=-1", "start_offset"),
        ("tasks=[{name: quadratic, choices: {dim: []}}]", "tasks.0.choices.dim"),
        ("tasks=[{name: quadratic, choices: {dim: [2, 0]}}]", "tasks.0.choices.dim"),
        ("tasks=[{name: quadratic, choices: {depth: [1, 2]}}]", "tasks.0.choices.depth"),
        ("objective.name=eval_loss|targets=runs/none", "objective.name"),
    ],
)
def test_bad_family_values_name_the_key(tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config(tmp_path, *override.split("|"))


def test_charlm_holds_out_the_end_of_its_training_text() -> None:
    plain, split = envs.make_task("charlm"), envs.make_task("charlm", valid_size=4000)
    train, whole = split._streams()[0], plain._streams()[0]
    assert torch.equal(train, whole[:-4000]) and torch.equal(split._valid, whole[-4000:])
    inputs, targets = next(split.valid_batches(0))
    assert inputs.shape == (32, 32) and torch.equal(inputs[:, 1:], targets[:, :-1])
    with pytest.raises(TaskError, match="valid range"):
        envs.make_task("charlm", valid_size=10).batches(0)


def test_es_rollouts_score_the_same_held_out_losses_as_the_unroll() -> None:
    task = envs.make_task("digits_mlp", width=6, valid_size=256)
    rule = CoordinateLSTM(LSTMConfig(hidden_size=4))
    differentiable, plain = (start_episode(task, 5, rule, held_out=True) for _ in range(2))
    expected = unroll(differentiable, 3).valid_losses
    batches = [plain.take_batch()] + [next(plain.batches) for _ in range(3)]
    valid = [next(plain.valid_batches) for _ in range(3)]
    trajectory = rollout(plain, batches, valid)
    assert expected is not None and trajectory.valid_losses is not None
    assert torch.allclose(trajectory.valid_losses.float(), expected.detach(), atol=1e-5)


@pytest.mark.parametrize("estimator", ["es", "pes"])
def test_evolution_strategies_meta_train_on_the_held_out_objective(tmp_path: Path, estimator: str) -> None:
    family = "tasks=[{name: digits_mlp, options: {width: 4, valid_size: 200}}]"
    cfg = config(tmp_path, family, "objective.name=eval_loss", f"estimator={estimator}", "estimator.options.pairs=2",
                 "episodes=1", "val_every=1", "val_seeds=1", "rule.options.hidden_size=4")  # fmt: skip
    metrics = run_train(cfg)
    assert metrics["meta_steps"] == 2 and metrics["skipped_steps"] == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["learned_final_loss"]) for r in records if r.get("kind") == "episode")
