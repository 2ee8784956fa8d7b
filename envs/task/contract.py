"""The task contract, checked up front: what every consumer of a :class:`~envs.task.Task` relies on.

One task serves the DSS engine (batched losses on flat vectors through ``torch.func.functional_call``), the
meta-trainer, the baselines, the compare harness (which stacks same-shape batches of several runs) and the Gymnasium
environments. A task that breaks one of their assumptions used to pass every registry test and fail later, deep
inside one of them. :func:`check_task` runs the assumptions on one task object in about a second, and
:func:`check_task_class` the cheap class-level part that :func:`envs.register_task` runs on every registration.

What is checked (each failure is one :class:`TaskContractError` naming the task and the broken rule):

- the class: a lowercase ``name``, an ``Options`` dataclass whose defaults build, a :class:`~envs.task.Recipe`, and
  Gymnasium ids of the form ``metaopt/<Name>-v0`` derived from the class;
- the model: the same seed gives the same weights, other seeds other weights, on the task's device and dtype, with
  trainable parameters, without touching the global random state;
- batches: ``(inputs, targets)`` with a leading batch dimension shared by both, the same shapes every step (batched
  runs stack them), the same seed giving the same batches; the same for ``eval_data`` and, where the task has one,
  the held-out split of ``valid_batches``;
- the loss: a finite scalar, ``loss(model, batch)`` equal to ``criterion(model(inputs), targets)`` and to the same
  model evaluated functionally on its flat parameters (what DSS evaluates), and ``eval_loss`` finite.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING, Any

from envs.errors import TaskError

if TYPE_CHECKING:
    from envs.task import Task

__all__ = ["TaskContractError", "check_task", "check_task_class"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ENV_ID = re.compile(r"^metaopt/[A-Z][A-Za-z0-9]*-v0$")


class TaskContractError(TaskError):
    """A task breaks the contract every consumer relies on; the message names the task and the rule."""


def check_task_class(cls: type[Any]) -> None:
    """The class-level part of the contract (no model, no data): run by :func:`envs.register_task`.

    Raises:
        TaskContractError: a bad ``name``, ``Options``, ``recipe`` or ``env_name``.
    """
    from envs.task import Recipe

    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise TaskContractError(f"{cls.__name__}.name must be a lowercase identifier like 'digits_mlp', got {name!r}")
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise TaskContractError(f"task {name!r}: Options must be a dataclass of the task's options, got {options!r}")
    try:
        options()
    except TypeError as exc:
        raise TaskContractError(f"task {name!r}: every field of Options needs a default ({exc})") from None
    if not isinstance(getattr(cls, "recipe", None), Recipe):
        raise TaskContractError(f"task {name!r}: recipe must be an envs.task.Recipe")
    env_name = getattr(cls, "env_name", None)
    if env_name is not None and not _ENV_ID.match(f"metaopt/{env_name}-v0"):
        raise TaskContractError(f"task {name!r}: env_name must be CamelCase letters and digits, got {env_name!r}")


def check_task(task: Task, steps: int = 3) -> None:
    """Check one task object against the whole contract (builds models, reads ``steps`` batches).

    Raises:
        TaskContractError: the first rule the task breaks, with what was found.
    """
    import torch
    from torch.func import functional_call

    from envs.gym import env_id

    check_task_class(type(task))
    name = task.name
    for family in ("", "LR"):
        ident = env_id(name, family)
        if not re.match(r"^metaopt/[A-Z][A-Za-z0-9]*(-LR)?-v0$", ident):
            raise TaskContractError(f"task {name!r}: its Gymnasium id {ident!r} is not metaopt/<Name>[-LR]-v0")

    state = torch.random.get_rng_state()
    model, again, other = task.init_model(0), task.init_model(0), task.init_model(1)
    if not torch.equal(torch.random.get_rng_state(), state):
        raise TaskContractError(f"task {name!r}: init_model changed the global random state")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TaskContractError(f"task {name!r}: the model has no trainable parameters")
    for p in params:
        if p.dtype != task.dtype or p.device.type != task.device.type:
            raise TaskContractError(
                f"task {name!r}: a parameter is {p.dtype} on {p.device}, the task is {task.dtype} on {task.device}"
            )
    if not all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters())):
        raise TaskContractError(f"task {name!r}: init_model(0) twice gave different weights")
    if all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters())):
        raise TaskContractError(f"task {name!r}: init_model(0) and init_model(1) gave the same weights")

    first = _take(task.batches(0), steps, name, "batches(0)")
    if not all(_same(a, b) for a, b in zip(first, _take(task.batches(0), steps, name, "batches(0)"))):
        raise TaskContractError(f"task {name!r}: batches(0) twice gave different batches")
    shapes = {_shapes(batch) for batch in first}
    if len(shapes) != 1:
        raise TaskContractError(f"task {name!r}: training batches change shape from step to step: {sorted(shapes)}")
    _check_batch(task.eval_data(), name, "eval_data()")
    try:
        held_out = _take(task.valid_batches(0), 1, name, "valid_batches(0)")
    except TaskError as exc:
        if isinstance(exc, TaskContractError):
            raise
    else:
        if _shapes(held_out[0])[0][1:] != _shapes(first[0])[0][1:]:
            raise TaskContractError(
                f"task {name!r}: held-out inputs {_shapes(held_out[0])[0]} differ from training inputs "
                f"{_shapes(first[0])[0]} beyond the batch dimension"
            )

    inputs, targets = first[0]
    with torch.no_grad():
        loss = task.loss(model, first[0])
        composed = task.criterion(model(inputs), targets)
        flat = {key: value.detach() for key, value in model.named_parameters()}
        functional = task.criterion(functional_call(model, flat, (inputs,)), targets)
    if loss.dim() != 0 or not math.isfinite(float(loss)):
        raise TaskContractError(f"task {name!r}: loss must be a finite scalar, got shape {tuple(loss.shape)} {loss}")
    for label, value in (("criterion(model(inputs), targets)", composed), ("the functional call", functional)):
        if not torch.allclose(loss, value, rtol=1e-5, atol=1e-7):
            raise TaskContractError(f"task {name!r}: loss(model, batch) = {float(loss)} but {label} = {float(value)}")
    evaluated = task.eval_loss(model)
    if not math.isfinite(evaluated):
        raise TaskContractError(f"task {name!r}: eval_loss of a fresh model is {evaluated}")


def _take(stream: Any, steps: int, name: str, what: str) -> list[Any]:
    batches = []
    for _ in range(steps):
        batch = next(stream)
        _check_batch(batch, name, what)
        batches.append(batch)
    return batches


def _check_batch(batch: Any, name: str, what: str) -> None:
    """A batch is ``(inputs, targets)``, two tensors with one leading batch dimension of the same size."""
    import torch

    if not (isinstance(batch, tuple) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch)):
        raise TaskContractError(f"task {name!r}: {what} must give (inputs, targets) tensors, got {type(batch)}")
    inputs, targets = batch
    if inputs.dim() == 0 or targets.dim() == 0 or inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
        raise TaskContractError(
            f"task {name!r}: {what} must hold a batch dimension first, shared by inputs and targets; got inputs "
            f"{tuple(inputs.shape)} and targets {tuple(targets.shape)}"
        )


def _shapes(batch: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(batch[0].shape), tuple(batch[1].shape)


def _same(a: Any, b: Any) -> bool:
    import torch

    return bool(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]))
