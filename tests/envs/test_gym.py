"""Gymnasium environments: the registry passes check_env, seeds reproduce episodes, and Adam through the environment
is Adam in a plain PyTorch loop."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs

LOCAL = {"mnist_mlp", "mnist_cnn", "cifar10_cnn", "ptb_lstm"}
SMALL = {"batch_size": 8, "eval_size": 16}


def make_env(name: str, data_dirs: dict[str, str], **kwargs: object) -> gym.Env:
    options = {"data_dir": data_dirs[name], **SMALL} if name in LOCAL else {}
    return gym.make(envs.ENV_IDS[name], **options, **kwargs)


def test_every_task_is_registered_under_the_namespace() -> None:
    assert set(envs.ENV_IDS) == set(envs.list_tasks())
    assert envs.ENV_IDS["digits_mlp"] == "metaopt/DigitsMLP-v0"
    assert all(ident in gym.registry for ident in envs.ENV_IDS.values())


@pytest.mark.parametrize("name", sorted(envs.ENV_IDS))
def test_check_env(name: str, data_dirs: dict[str, str]) -> None:
    env = make_env(name, data_dirs)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("name", ["quadratic", "digits_mlp", "charlm"])
def test_same_seed_same_rollout(name: str, data_dirs: dict[str, str]) -> None:
    def episode(seed: int) -> list[np.ndarray]:
        env = make_env(name, data_dirs)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        trace = [obs["params"], obs["grad"]]
        for _ in range(4):
            obs, reward, *_ = env.step(1e-2 * rng.standard_normal(env.action_space.shape))
            trace += [obs["params"], obs["grad"], np.array([reward])]
        return trace

    first, second, other = episode(11), episode(11), episode(12)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize(("name", "lr"), [("digits_mlp", 0.01), ("quadratic", 0.1), ("digits_cnn", 0.01)])
def test_adam_through_the_env_equals_adam_in_a_plain_loop(name: str, lr: float) -> None:
    steps = 25
    env = gym.make(envs.ENV_IDS[name], max_episode_steps=steps)
    env_losses = envs.gym.rollout(env, envs.OptimizerPolicy("adam", lr=lr), seed=3, steps=steps)
    _, info = env.reset(seed=3)
    run_seed = info["run_seed"]

    task = envs.make_task(name).instance(run_seed)
    model = task.init_model(run_seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    batches = task.batches(run_seed)
    plain = []
    for _ in range(steps + 1):
        loss = task.loss(model, next(batches))
        plain.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert env_losses == plain  # bit for bit


def test_episode_is_truncated_by_max_episode_steps() -> None:
    env = gym.make("metaopt/Quadratic-v0", max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(np.zeros(10))[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_task_options_pass_through_make() -> None:
    env = gym.make("metaopt/DigitsMLP-v0", width=40)
    assert env.action_space.shape == (64 * 40 + 40 + 40 * 10 + 10,)


@pytest.mark.parametrize(
    ("action", "match"),
    [(np.zeros(9), r"action has shape \(9,\), expected \(10,\)"), (np.full(10, np.nan), "10 NaN or infinite")],
)
def test_bad_actions_are_rejected_and_change_nothing(action: np.ndarray, match: str) -> None:
    env = gym.make("metaopt/Quadratic-v0")
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)
    after, *_ = env.step(np.zeros(10))
    assert np.array_equal(after["params"], obs["params"])


def test_divergence_terminates_the_episode() -> None:
    env = gym.make("metaopt/Quadratic-v0")
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(np.full(10, 1e30))
    assert terminated and info["diverged"]
