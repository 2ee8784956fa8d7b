"""Gymnasium environments: the registry passes check_env, seeds reproduce episodes, and Adam through the environment
is Adam in a plain PyTorch loop."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs

LOCAL = {"mnist_mlp", "mnist_cnn", "cifar10_cnn", "ptb_lstm"}
SMALL = {"batch_size": 8, "eval_size": 16}


def make_env(name: str, data_dirs: dict[str, str], family: str = "", **kwargs: object) -> gym.Env:
    options = {"data_dir": data_dirs[name], **SMALL} if name in LOCAL else {}
    ids = envs.LR_ENV_IDS if family == "LR" else envs.ENV_IDS
    return gym.make(ids[name], **options, **kwargs)


def test_every_task_is_registered_under_the_namespace() -> None:
    assert set(envs.ENV_IDS) == set(envs.list_tasks()) == set(envs.LR_ENV_IDS)
    assert envs.ENV_IDS["digits_mlp"] == "metaopt/DigitsMLP-v0"
    assert envs.LR_ENV_IDS["digits_mlp"] == "metaopt/DigitsMLP-LR-v0"
    assert all(ident in gym.registry for ids in (envs.ENV_IDS, envs.LR_ENV_IDS) for ident in ids.values())


def test_a_task_registered_later_gets_its_ids() -> None:
    from envs.task.registry import TASKS
    from envs.tasks.quadratic import QuadraticTask

    @envs.register_task
    class LateQuadratic(QuadraticTask):
        name = "late_quadratic"
        env_name = None

    try:
        assert "late_quadratic" in envs.ENV_IDS and envs.ENV_IDS["late_quadratic"] == "metaopt/LateQuadratic-v0"
        assert gym.make(envs.LR_ENV_IDS["late_quadratic"]).unwrapped.task.name == "late_quadratic"
    finally:
        TASKS.unregister("late_quadratic")
        for ident in ("metaopt/LateQuadratic-v0", "metaopt/LateQuadratic-LR-v0"):
            gym.registry.pop(ident, None)


@pytest.mark.parametrize("family", ["", "LR"])
@pytest.mark.parametrize("name", sorted(envs.list_tasks()))
def test_check_env_passes_without_a_warning(name: str, family: str, data_dirs: dict[str, str]) -> None:
    env = make_env(name, data_dirs, family)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing filtered: a check_env warning fails the test
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_make_works_in_a_fresh_interpreter_that_imported_nothing_of_the_project() -> None:
    ids = [*envs.ENV_IDS.values(), *envs.LR_ENV_IDS.values()]
    local = [envs.ENV_IDS[n] for n in LOCAL] + [envs.LR_ENV_IDS[n] for n in LOCAL]
    script = (
        "import json, sys, gymnasium as gym\n"
        "made = {}\n"
        f"for ident in {[i for i in ids if i not in local]!r}:\n"
        "    env = gym.make('envs:' + ident)\n"
        "    made[ident] = type(env.unwrapped).__name__\n"
        "print(json.dumps(made))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    made = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(made) == len(ids) - len(local) and set(made.values()) == {"OptimizeeEnv", "LRControlEnv"}


def test_observations_are_float32_and_inside_their_spaces() -> None:
    env = gym.make("metaopt/DigitsMLP-v0")
    obs, _ = env.reset(seed=0)
    assert all(v.dtype == np.float32 for v in obs.values()) and env.observation_space.contains(obs)
    lr_env = gym.make("metaopt/DigitsMLP-LR-v0")
    obs, _ = lr_env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (8,) and lr_env.observation_space.contains(obs)


def test_lr_envs_share_one_space_across_tasks_and_vectorise() -> None:
    made = [gym.make(envs.LR_ENV_IDS[n]) for n in ("quadratic", "digits_mlp", "digits_cnn")]
    assert all(e.observation_space == made[0].observation_space for e in made)
    assert all(e.action_space == made[0].action_space for e in made)
    vec = gym.make_vec("metaopt/Quadratic-LR-v0", num_envs=3, vectorization_mode="sync")
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3, 8)
    obs, rewards, *_ = vec.step(np.zeros((3, 1), dtype=np.float32))
    assert rewards.shape == (3,) and np.isfinite(rewards).all()


def test_lr_env_sets_the_learning_rate_it_says_and_rewards_minus_the_loss() -> None:
    env = gym.make("metaopt/Quadratic-LR-v0", lr_range=(1e-3, 1e-1), steps_per_action=5)
    _, info = env.reset(seed=4)
    _, reward, _, _, info = env.step(np.array([0.0], dtype=np.float32))
    assert info["lr"] == pytest.approx(1e-2) and reward == -info["loss"] and info["steps"] == 5

    # the same actions reproduce the episode; a different learning rate does not
    def episode(action: float) -> list[float]:
        env.reset(seed=4)
        return [env.step(np.array([action], dtype=np.float32))[1] for _ in range(3)]

    assert episode(0.5) == episode(0.5) and episode(0.5) != episode(-0.5)
    unwrapped = env.unwrapped
    assert unwrapped.learning_rate(-1) == pytest.approx(1e-3) and unwrapped.learning_rate(1) == pytest.approx(1e-1)
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        env.step(np.array([1.5]))
    with pytest.raises(ValueError, match="lr_range must be"):
        gym.make("metaopt/Quadratic-LR-v0", lr_range=(0.1, 0.01))


def test_lr_env_with_a_good_rate_beats_a_tiny_rate() -> None:
    env = gym.make("metaopt/Quadratic-LR-v0")

    def total(action: float) -> float:
        env.reset(seed=0)
        return sum(env.step(np.array([action], dtype=np.float32))[1] for _ in range(10))

    assert total(0.5) > total(-1.0)  # lr 0.1 lowers the quadratic's loss faster than lr 1e-4


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
    [
        (np.zeros(9), r"action has shape \(9,\), expected \(10,\)"),
        (np.full(10, np.nan), "10 NaN or infinite"),
        (np.full(10, 2.0), r"10 entries outside \[-1, 1\]"),
    ],
)
def test_bad_actions_are_rejected_and_change_nothing(action: np.ndarray, match: str) -> None:
    env = gym.make("metaopt/Quadratic-v0")
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)
    after, *_ = env.step(np.zeros(10))
    assert np.array_equal(after["params"], obs["params"])


def test_divergence_terminates_the_episode_with_a_finite_reward() -> None:
    env = gym.make("metaopt/Quadratic-v0", action_scale=1e30)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.full(10, 1.0))
    assert terminated and info["diverged"] and reward == -np.finfo(np.float32).max


def test_reward_is_minus_the_loss_and_actions_are_scaled() -> None:
    env = gym.make("metaopt/Quadratic-v0", action_scale=0.5)
    obs, _ = env.reset(seed=0)
    after, reward, *_, info = env.step(np.full(10, 0.5))
    assert reward == -info["loss"] and reward < 0
    np.testing.assert_allclose(after["params"], obs["params"] + 0.25, rtol=0, atol=1e-6)
