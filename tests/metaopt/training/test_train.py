"""Meta-training: it lowers the meta-loss, resumes bit for bit, skips non-finite meta-gradients, speaks clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import envs
from envs.seeding import seeded
from envs.tooling.config import load_config
from metaopt import CoordinateLSTM, TrainConfig, load_net, optimizee_loss, register_objective, start_episode, unroll
from metaopt.cli import main
from metaopt.commands.train import run_train
from metaopt.training import MetaTrainingError
from tests.metaopt.sizes import TINY_TRAIN


def config(tmp_path: Path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, "metaopt/quadratic.yaml", [*TINY_TRAIN, f"out={tmp_path / 'run'}", *overrides])


def mean_meta_loss(net: CoordinateLSTM, seeds: range) -> float:
    task = envs.make_task("quadratic", dim=4)
    return sum(float(optimizee_loss(unroll(start_episode(task, s, net), 10)).detach()) for s in seeds) / len(seeds)


def test_meta_training_lowers_the_meta_loss(tmp_path: Path) -> None:
    cfg = config(tmp_path, "episodes=12", "meta_lr=0.01", "val_every=12")
    metrics = run_train(cfg)
    with seeded(cfg.seed, "net"):  # how the trainer initialises its network
        initial = CoordinateLSTM(cfg.net)
    trained = load_net(tmp_path / "run" / "checkpoints" / "last.pt")
    held_out = range(10)  # seeds below the validation range: never seen in training
    assert mean_meta_loss(trained, held_out) < 0.7 * mean_meta_loss(initial, held_out)
    assert metrics["meta_steps"] == 12 * 2 and metrics["skipped_steps"] == 0
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def final_state(path: Path) -> dict[str, Any]:
    return torch.load(path / "checkpoints" / "last.pt", weights_only=True)


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = config(tmp_path / "a", "episodes=4")
    run_train(straight)

    def kill_after_two(episode: int) -> None:
        if episode == 2:
            raise KeyboardInterrupt

    interrupted = config(tmp_path / "b", "episodes=4")
    with pytest.raises(KeyboardInterrupt):
        run_train(interrupted, callback=kill_after_two)
    assert final_state(tmp_path / "b" / "run")["trainer"]["progress"]["episode"] == 2
    run_train(load_config(TrainConfig, None, [f"resume={tmp_path / 'b' / 'run'}"]))

    a, b = final_state(tmp_path / "a" / "run"), final_state(tmp_path / "b" / "run")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    adam_a, adam_b = a["trainer"]["meta_optimizer"]["state"], b["trainer"]["meta_optimizer"]["state"]
    assert all(torch.equal(adam_a[i]["exp_avg_sq"], adam_b[i]["exp_avg_sq"]) for i in adam_a)
    assert a["trainer"]["progress"] == b["trainer"]["progress"]


def nan_after(calls_ok: int) -> Any:
    calls = {"n": 0}

    def objective(trajectory: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = optimizee_loss(trajectory)
        return loss if calls["n"] > calls_ok else loss * float("nan")

    return objective


def test_non_finite_meta_gradients_are_skipped_counted_and_stop_training(tmp_path: Path) -> None:
    register_objective("nan_once", lambda cfg: nan_after(2))  # the first meta-step (2 optimizees) is NaN
    metrics = run_train(config(tmp_path / "once", "episodes=2", "objective.name=nan_once"))
    assert metrics["skipped_steps"] == 1 and metrics["meta_steps"] == 1 + 2  # the NaN episode ended early
    register_objective("nan_always", lambda cfg: nan_after(10**9))
    with pytest.raises(MetaTrainingError, match="3 meta-steps in a row.*lower meta_lr.*output_scale.*clip_grad_norm"):
        run_train(config(tmp_path / "always", "episodes=5", "objective.name=nan_always", "max_skips=3"))
    records = (tmp_path / "always" / "run" / "records.jsonl").read_text().splitlines()
    skips = [line for line in records if "skip" in line]
    assert len(skips) == 3


def test_cli_train_help_and_bad_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key in ("tasks", "net.hidden_size", "truncation", "meta_batch", "second_order", "resume"):
        assert f"{key} = " in out
    assert main(["train", "metaopt/quadratic.yaml", "truncation=7"]) == 2
    assert "truncation (7) must be positive and divide steps (100)" in capsys.readouterr().err
