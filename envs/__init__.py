"""Tasks for meta-learned optimizers and landscape analysis, and their Gymnasium environments.

>>> import envs
>>> task = envs.make_task("digits_mlp", width=20)
>>> model = task.init_model(seed=0)
>>> loss = task.loss(model, next(task.batches(seed=0)))

Importing the package registers every Gymnasium environment (``metaopt/<Name>-v0`` and ``metaopt/<Name>-LR-v0``);
the names below are imported on first use (:mod:`envs.lazy`), and the reference tasks the first time the registry
is consulted (``envs.list_tasks()``), so that ``import envs`` does not import torch.
"""

from typing import TYPE_CHECKING

from envs import gym as _gym  # noqa: F401  (registers the reference tasks' Gymnasium ids; entry points: no torch)
from envs.lazy import lazy_exports

if TYPE_CHECKING:
    from envs.errors import ConfigError, DataNotFoundError, TaskError
    from envs.gym import ENV_IDS, LR_ENV_IDS, LRControlEnv, OptimizeeEnv, OptimizerPolicy
    from envs.task import Batch, Recipe, Task
    from envs.task.contract import TaskContractError, check_task
    from envs.task.registry import get_task_class, list_tasks, make_task, register_task, task_from_spec
    from envs.training.fit import FitResult, fit
    from envs.training.optim import list_optimizers, make_optimizer, register_optimizer

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "envs.task.contract": ["TaskContractError", "check_task"],
        "envs.errors": ["ConfigError", "DataNotFoundError", "TaskError"],
        "envs.training.fit": ["FitResult", "fit"],
        "envs.gym": ["ENV_IDS", "LR_ENV_IDS", "LRControlEnv", "OptimizeeEnv", "OptimizerPolicy"],
        "envs.training.optim": ["list_optimizers", "make_optimizer", "register_optimizer"],
        "envs.task.registry": ["get_task_class", "list_tasks", "make_task", "register_task", "task_from_spec"],
        "envs.task": ["Batch", "Recipe", "Task"],
    },
)

__all__ = [
    "ENV_IDS",
    "LR_ENV_IDS",
    "Batch",
    "ConfigError",
    "DataNotFoundError",
    "FitResult",
    "LRControlEnv",
    "OptimizeeEnv",
    "OptimizerPolicy",
    "Recipe",
    "Task",
    "TaskContractError",
    "TaskError",
    "check_task",
    "fit",
    "get_task_class",
    "list_optimizers",
    "list_tasks",
    "make_optimizer",
    "make_task",
    "register_optimizer",
    "register_task",
    "task_from_spec",
]
