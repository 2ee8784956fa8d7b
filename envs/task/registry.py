"""Task registry: ``make_task(name, **options)`` and ``list_tasks()``; options checked against each task's schema.

The reference tasks (:mod:`envs.tasks`) are imported the first time the registry is consulted or added to, not when
this module is: ``import envs`` and the command lines' ``--help`` stay free of torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from typing import TYPE_CHECKING, Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from envs.errors import TaskError
from envs.tooling.registry import Registry

if TYPE_CHECKING:
    import torch

    from envs.task import Task

__all__ = ["TASKS", "get_task_class", "list_tasks", "make_task", "register_task", "task_from_spec"]

TASKS: Registry[type[Task]] = Registry("task")
"""The registered tasks (each entry's options: the class's ``Options`` dataclass)."""
T = TypeVar("T", bound="type[Task]")


def _load_reference_tasks() -> None:
    """Import :mod:`envs.tasks`, which registers the reference tasks (a no-op once imported or while importing)."""
    if "envs.tasks" not in sys.modules:
        importlib.import_module("envs.tasks")


def register_task(cls: T) -> T:
    """Class decorator adding a Task subclass to the registry under ``cls.name``, with its two Gymnasium ids.

    The class-level part of the task contract is checked here (:func:`envs.task.contract.check_task_class`); the whole
    contract, which builds models and reads data, is :func:`envs.task.contract.check_task`, run over every registered
    task by the tests.

    Raises:
        TaskContractError: a bad ``name``, ``Options``, ``recipe`` or ``env_name``.
        ValueError: the name is taken by another task.
    """
    from envs.task.contract import check_task_class

    check_task_class(cls)
    _load_reference_tasks()  # so a clash with a reference task's name is found here, as it always was
    TASKS.register(cls.name, cls, config=cls.Options)
    from envs.gym import register_env, register_lr_env  # envs.gym imports this module: imported on use

    register_env(cls.name)
    register_lr_env(cls.name)
    return cls


def list_tasks() -> list[str]:
    """Names of every registered task, sorted."""
    _load_reference_tasks()
    return TASKS.names()


def get_task_class(name: str) -> type[Task]:
    """The Task subclass registered as ``name``; a clear error naming the valid choices otherwise."""
    _load_reference_tasks()
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; valid tasks: {', '.join(list_tasks())}")
    return TASKS.get(name)


def option_help(cls: type[Task]) -> str:
    """``name: type = default`` for each option of a task, for error messages."""
    parts = []
    for f in dataclasses.fields(cls.Options):
        default = f.default if f.default is not dataclasses.MISSING else "required"
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        parts.append(f"{f.name}: {type_name} = {default!r}")
    return "; ".join(parts) or "(none)"


def validate_options(cls: type[Task], options: dict[str, Any]) -> Any:
    """Build ``cls.Options`` from ``options``, converting strings from the command line and checking types."""
    valid = {f.name for f in dataclasses.fields(cls.Options)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TaskError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for task {cls.name!r}; "
            f"valid options: {option_help(cls)}"
        )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls.Options), OmegaConf.create(dict(options)))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise TaskError(f"bad option for task {cls.name!r}: {exc.msg}; valid options: {option_help(cls)}") from None


def make_task(
    name: str,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    **options: Any,
) -> Task:
    """Create a registered task.

    Args:
        name: one of :func:`list_tasks`.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (CUDA when available); default CPU.
        dtype: ``"float32"`` (default) or ``"float64"``, or a torch dtype.
        **options: task options; see each task's ``Options`` dataclass.
    """
    from envs.devices import resolve_device, resolve_dtype  # imports torch

    cls = get_task_class(name)
    opts = validate_options(cls, options)
    return cls(opts, device=resolve_device(device or "cpu"), dtype=resolve_dtype(dtype or "float32"))


def task_from_spec(spec: dict[str, Any], **kwargs: Any) -> Task:
    """Rebuild a task from its ``Task.spec`` dictionary (``{"name", "options"}``)."""
    return make_task(spec["name"], **kwargs, **dict(spec.get("options") or {}))
