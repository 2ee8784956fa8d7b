"""Tasks for meta-learned optimizers and landscape analysis, and their Gymnasium environments.

>>> import envs
>>> task = envs.make_task("digits_mlp", width=20)
>>> model = task.init_model(seed=0)
>>> loss = task.loss(model, next(task.batches(seed=0)))

Importing the package registers every reference task (``envs.list_tasks()``) and every Gymnasium environment
(``metaopt/<Name>-v0`` and ``metaopt/<Name>-LR-v0``).
"""

from envs import tasks as _tasks  # noqa: F401  (registers the reference tasks)
from envs.errors import ConfigError, DataNotFoundError, TaskError
from envs.fit import FitResult, fit
from envs.gym import ENV_IDS, LR_ENV_IDS, LRControlEnv, OptimizeeEnv, OptimizerPolicy  # after tasks: registers them
from envs.optim import list_optimizers, make_optimizer, register_optimizer
from envs.registry import get_task_class, list_tasks, make_task, register_task, task_from_spec
from envs.task import Batch, Recipe, Task

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
    "TaskError",
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
