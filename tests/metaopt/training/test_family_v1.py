"""Meta-training the tiny rule on the augmented family: same seed same run, kill -9 and resume gives the same run,
random horizons, gradient rescaling, GELU members, and the shipped recipe's config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import envs
from envs.errors import ConfigError
from envs.tooling.config import load_config
from envs.tooling.rundiff import diff_runs
from metaopt import TrainConfig, start_episode
from metaopt.commands.train import run_train
from metaopt.rules import TinyConfig, TinyRule
from metaopt.training.augment import rescale_gradients
from metaopt.training.schedule import FreshEpisodes
from tests.metaopt.sizes import TINY_TRAIN
from tests.test_resume import kill_after, records, run_to_the_end

FAMILY = [
    "tasks=[{name: digits_mlp, options: {width: 4, depth: 2, valid_size: 200, batch_size: 32}, "
    "choices: {width: [4, 8], activation: [relu, gelu]}}]",
    "rule=tiny",
    "rule.options={learned_tensors: all, scheduler: true}",
    "objective.name=eval_loss",
    "task_sampling=random",
    "start_offset=3",
    "horizons=[10, 20]",
    "grad_scales=[0.1, 10.0]",
]


def config(tmp_path: Path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, "metaopt/quadratic.yaml", [*TINY_TRAIN, f"out={tmp_path}", *FAMILY, *overrides])


def test_the_same_seed_gives_the_same_meta_training_curve(tmp_path: Path) -> None:
    for name in ("a", "b"):
        run_train(config(tmp_path / name, "episodes=3", "val_every=3", "val_seeds=1"))
    assert diff_runs(tmp_path / "a", tmp_path / "b") == []
    other = tmp_path / "c"
    run_train(config(other, "episodes=3", "val_every=3", "val_seeds=1", "seed=1"))
    assert diff_runs(tmp_path / "a", other) != []  # the comparison can see a difference


def test_killed_with_sigkill_and_resumed_it_ends_with_the_same_checkpoint(tmp_path: Path) -> None:
    argv = ["metaopt", "train", "configs/metaopt/quadratic.yaml", *TINY_TRAIN, *FAMILY, "episodes=8", "val_every=4",
            "val_seeds=1"]  # fmt: skip
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_to_the_end(argv, clean)
    assert kill_after(argv, killed, 3) < records(clean)
    run_to_the_end(argv, killed)
    assert diff_runs(clean, killed) == []
    a, b = (torch.load(p / "checkpoints" / "last.pt", weights_only=True) for p in (clean, killed))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_every_tensorboard_event_before_a_checkpoint_is_on_disk_when_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a kill -9 right after an episode's checkpoint must not lose the events the resumed run will not log again: the
    # writer is flushed before each checkpoint (its background thread may otherwise still hold the last events)
    from torch.utils.tensorboard import SummaryWriter

    from envs.tooling.rundiff import tensorboard_values

    flushes: list[int] = []
    original = SummaryWriter.flush

    def counted(self: SummaryWriter) -> None:
        flushes.append(1)
        original(self)

    monkeypatch.setattr(SummaryWriter, "flush", counted)
    seen: list[int] = []

    def read_the_disk(episode: int) -> None:
        assert len(flushes) >= episode
        meta_steps = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["info"]["meta_step"]
        assert len(tensorboard_values(tmp_path)["tb/meta/grad_norm"]) == meta_steps
        seen.append(episode)

    run_train(config(tmp_path, "episodes=2", "val_every=2", "val_seeds=1"), callback=read_the_disk)
    assert seen == [1, 2]


def test_random_horizons_draw_each_episode_s_length_reproducibly(tmp_path: Path) -> None:
    cfg = config(tmp_path, "horizons=[5, 10, 20]", "task_sampling=cycle", "start_offset=0", "grad_scales=[]")
    schedule = FreshEpisodes(cfg, [envs.make_task(t.name, **t.options) for t in cfg.tasks])
    rule = TinyRule()
    lengths = []
    for episode in range(12):
        schedule.inners(episode, rule)
        lengths.append(schedule.truncations * cfg.truncation)
    assert set(lengths) == {5, 10, 20}
    assert lengths == [schedule.horizon_of(e) for e in range(12)]
    short = config(tmp_path / "run", "horizons=[5, 10]", "episodes=6", "val_every=6", "val_seeds=1")
    drawn = [FreshEpisodes(short, []).horizon_of(e) for e in range(6)]
    assert set(drawn) == {5, 10}
    assert run_train(short)["meta_steps"] == sum(drawn) // short.truncation  # the loop runs the drawn lengths


def test_gradient_rescaling_multiplies_the_gradients_and_leaves_the_losses() -> None:
    task = envs.make_task("digits_mlp", width=4, valid_size=200)
    rule = TinyRule()
    plain, scaled = start_episode(task, 2, rule), start_episode(task, 2, rule)
    rescale_gradients(scaled, 7.0)
    batch = next(plain.batches)
    losses = [task.loss(inner.model, batch) for inner in (plain, scaled)]
    assert losses[0].item() == losses[1].item()
    grads = [torch.autograd.grad(loss, list(inner.model.parameters())) for loss, inner in zip(losses, (plain, scaled))]
    for a, b in zip(*grads):
        torch.testing.assert_close(b, 7.0 * a)
    with pytest.raises(ValueError, match="first step"):
        scaled.step = 1
        rescale_gradients(scaled, 2.0)


def test_gelu_members_and_the_family_v1_recipe_load() -> None:
    model = envs.make_task("digits_mlp", activation="gelu", depth=3).init_model(0)
    assert any(isinstance(m, torch.nn.GELU) for m in model.modules())
    cfg = load_config(TrainConfig, "metaopt/family_v1.yaml")
    assert cfg.rule.name == "tiny" and cfg.rule_config().learned_tensors == "hidden" and cfg.horizons
    assert isinstance(cfg.rule_config(), TinyConfig)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("horizons=[10, 12]", "horizons"),
        ("horizons=[0]", "horizons"),
        ("grad_scales=[1.0, 0.0]", "grad_scales"),
        ("grad_scales=[-1.0]", "grad_scales"),
    ],
)
def test_bad_augmentation_values_name_the_key(tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        config(tmp_path, override)
