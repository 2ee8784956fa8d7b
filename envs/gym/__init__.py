"""Every task as a Gymnasium environment, registered as ``metaopt/<Name>-v0`` (e.g. ``metaopt/DigitsMLP-v0``)."""

from __future__ import annotations

import gymnasium as gym

from envs.gym.optimizee_env import OptimizeeEnv
from envs.gym.policy import OptimizerPolicy, rollout
from envs.registry import get_task_class, list_tasks

__all__ = ["ENV_IDS", "OptimizeeEnv", "OptimizerPolicy", "env_id", "register_env", "rollout"]

NAMESPACE = "metaopt"
MAX_EPISODE_STEPS = 100
_ACRONYMS = {"mlp": "MLP", "cnn": "CNN", "lstm": "LSTM"}


def env_id(task_name: str) -> str:
    """The Gymnasium id of a task: ``digits_mlp`` -> ``metaopt/DigitsMLP-v0``."""
    cls = get_task_class(task_name)
    name = cls.env_name or "".join(_ACRONYMS.get(part, part.capitalize()) for part in task_name.split("_"))
    return f"{NAMESPACE}/{name}-v0"


def register_env(task_name: str, max_episode_steps: int = MAX_EPISODE_STEPS) -> str:
    """Register the environment of a task (done for every reference task on import); returns its id."""
    ident = env_id(task_name)
    if ident not in gym.registry:
        gym.register(
            id=ident,
            entry_point="envs.gym.optimizee_env:OptimizeeEnv",
            kwargs={"task": task_name},
            max_episode_steps=max_episode_steps,
        )
    return ident


ENV_IDS: dict[str, str] = {name: register_env(name) for name in list_tasks()}
"""Task name -> Gymnasium id, for every task registered when ``envs`` was imported."""
