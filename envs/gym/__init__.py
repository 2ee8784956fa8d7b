"""Every task as two Gymnasium environments.

* ``metaopt/<Name>-v0`` (e.g. ``metaopt/DigitsMLP-v0``): :class:`OptimizeeEnv`, the agent is the optimizer (its
  action is the parameter update; spaces sized by the task's parameter count);
* ``metaopt/<Name>-LR-v0``: :class:`LRControlEnv`, the agent sets the learning rate of a base optimizer from
  summary statistics (fixed, bounded spaces: one agent across tasks, ``gymnasium.make_vec``).

Importing ``envs`` registers both for every reference task, and a task registered later (``envs.register_task``)
gets its ids on first use of :data:`ENV_IDS` / :data:`LR_ENV_IDS` or :func:`register_env`. Gymnasium 1.x has no
plugin entry points, so in an interpreter that has not imported ``envs`` use the module prefix, which imports it:
``gymnasium.make("envs:metaopt/Quadratic-v0")``.

Registration is by entry-point string and the reference tasks' ids come from :data:`REFERENCE_ENV_NAMES` (read
from the tasks' source), so it imports neither the tasks nor torch; the environments (and the task) are imported by
``gymnasium.make``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import gymnasium as gym

from envs.lazy import lazy_exports
from envs.task.registry import get_task_class, list_tasks

if TYPE_CHECKING:
    from envs.gym.lr_env import LRControlEnv
    from envs.gym.optimizee_env import OptimizeeEnv
    from envs.gym.policy import OptimizerPolicy, rollout

__all__ = [
    "ENV_IDS",
    "LR_ENV_IDS",
    "LRControlEnv",
    "OptimizeeEnv",
    "OptimizerPolicy",
    "env_id",
    "register_env",
    "register_lr_env",
    "rollout",
]

NAMESPACE = "metaopt"
MAX_EPISODE_STEPS = 100
LR_MAX_EPISODE_STEPS = 50
_ACRONYMS = {"mlp": "MLP", "cnn": "CNN", "lstm": "LSTM"}
OPTIMIZEE_ENTRY_POINT = "envs.gym.optimizee_env:OptimizeeEnv"
LR_ENTRY_POINT = "envs.gym.lr_env:LRControlEnv"


def _reference_env_names() -> dict[str, str]:
    """Each reference task's ``<Name>``, read from the source of ``envs/tasks/`` without importing it (nor torch).

    A class decorated ``@register_task`` gives its ``name = "..."`` and, when set, ``env_name = "..."``; otherwise the
    name is derived as :func:`env_id` derives it. A new reference task is one module in ``envs/tasks/``, no list to
    edit; tests/test_cli_startup.py checks the result against the registry.
    """
    names: dict[str, str] = {}
    for path in sorted((Path(__file__).resolve().parents[1] / "tasks").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(node, ast.ClassDef) or not any(
                isinstance(d, ast.Name) and d.id == "register_task" for d in node.decorator_list
            ):
                continue
            fields = {
                target.id: item.value.value
                for item in node.body
                if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant)
                for target in item.targets
                if isinstance(target, ast.Name) and isinstance(item.value.value, str)
            }
            if "name" in fields:
                task = fields["name"]
                names[task] = fields.get("env_name") or _derived_env_name(task)
    return dict(sorted(names.items()))


def _derived_env_name(task_name: str) -> str:
    return "".join(_ACRONYMS.get(part, part.capitalize()) for part in task_name.split("_"))


REFERENCE_ENV_NAMES = _reference_env_names()
"""The ``<Name>`` of each reference task's ids (what :func:`env_id` derives from the task class), registered on
import without importing :mod:`envs.tasks`; tests/test_cli_startup.py checks it against the registry."""

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "envs.gym.lr_env": ["LRControlEnv"],
        "envs.gym.optimizee_env": ["OptimizeeEnv"],
        "envs.gym.policy": ["OptimizerPolicy", "rollout"],
    },
)


def env_id(task_name: str, family: str = "") -> str:
    """The Gymnasium id of a task: ``digits_mlp`` -> ``metaopt/DigitsMLP-v0`` (``family="LR"``: ``-LR-v0``)."""
    cls = get_task_class(task_name)
    name = cls.env_name or _derived_env_name(task_name)
    return f"{NAMESPACE}/{name}{'-' + family if family else ''}-v0"


def register_env(task_name: str, max_episode_steps: int = MAX_EPISODE_STEPS) -> str:
    """Register the :class:`OptimizeeEnv` of a task (done for every task on import); returns its id."""
    return _register(env_id(task_name), OPTIMIZEE_ENTRY_POINT, task_name, max_episode_steps)


def register_lr_env(task_name: str, max_episode_steps: int = LR_MAX_EPISODE_STEPS) -> str:
    """Register the :class:`LRControlEnv` of a task (done for every task on import); returns its id."""
    return _register(env_id(task_name, "LR"), LR_ENTRY_POINT, task_name, max_episode_steps)


def _register(ident: str, entry_point: str, task_name: str, max_episode_steps: int) -> str:
    if ident not in gym.registry:
        gym.register(id=ident, entry_point=entry_point, kwargs={"task": task_name}, max_episode_steps=max_episode_steps)
    return ident


class _LiveIds(Mapping[str, str]):
    """Task name -> Gymnasium id for every task registered now, registering the environment on first access."""

    def __init__(self, register: Callable[[str], str]):
        self._register = register

    def __getitem__(self, task_name: str) -> str:
        if task_name not in list_tasks():
            raise KeyError(task_name)
        return self._register(task_name)

    def __iter__(self) -> Iterator[str]:
        return iter(list_tasks())

    def __len__(self) -> int:
        return len(list_tasks())

    def __repr__(self) -> str:
        return repr(dict(self))


ENV_IDS: Mapping[str, str] = _LiveIds(register_env)
"""Task name -> ``metaopt/<Name>-v0``, for every registered task (later registrations included)."""
LR_ENV_IDS: Mapping[str, str] = _LiveIds(register_lr_env)
"""Task name -> ``metaopt/<Name>-LR-v0``, for every registered task."""

for _task, _name in REFERENCE_ENV_NAMES.items():
    _register(f"{NAMESPACE}/{_name}-v0", OPTIMIZEE_ENTRY_POINT, _task, MAX_EPISODE_STEPS)
    _register(f"{NAMESPACE}/{_name}-LR-v0", LR_ENTRY_POINT, _task, LR_MAX_EPISODE_STEPS)
