"""What a task is: the interface, its registry, its contract and the model building blocks of the reference tasks.

- :mod:`envs.task.base`: the :class:`Task` interface (a seeded model builder, a loss, batches, an evaluation set);
- :mod:`envs.task.registry`: ``make_task``, ``register_task``, ``list_tasks``;
- :mod:`envs.task.contract`: ``check_task``, what every consumer of a task relies on, checked up front;
- :mod:`envs.task.nn`: layers that ``torch.func.vmap`` can batch over weights.

The reference tasks themselves are the modules of :mod:`envs.tasks`, one task per module.
"""

from typing import TYPE_CHECKING

from envs.lazy import lazy_exports

if TYPE_CHECKING:
    from envs.task.base import Batch, Recipe, Task, full_batches, minibatches

# loaded on first use: the registry (and so ``import envs`` and ``--help``) stays free of torch
__getattr__, __dir__ = lazy_exports(
    __name__, {"envs.task.base": ["Batch", "Recipe", "Task", "full_batches", "minibatches"]}
)

__all__ = ["Batch", "Recipe", "Task", "full_batches", "minibatches"]
