"""The Task interface: a seeded model builder, a loss, a batch stream and a fixed evaluation set.

One task object serves every consumer of the framework: the DSS engine evaluates its loss on flat parameter vectors
(``criterion`` applied to ``torch.func.functional_call`` outputs), the meta-trainer unrolls it with ``higher``, the
baselines and the gymnasium environments train it as a plain module. A task therefore exposes its loss in two parts,
the model's forward on ``inputs`` and ``criterion(outputs, targets)``, and ``loss`` is just their composition.

Seeds: ``init_model(seed)`` and ``batches(seed)`` draw from independent streams derived from the run seed, so the same
seed gives the same weights and the same batches, bit for bit on CPU, whatever else the program did before.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from envs.errors import TaskError
from envs.seeding import generator, seeded

__all__ = ["Batch", "Recipe", "Task", "full_batches", "minibatches"]

Batch = tuple[Tensor, Tensor]
"""``(inputs, targets)``; a model maps inputs to outputs and ``Task.criterion(outputs, targets)`` is the loss."""


@dataclass(frozen=True)
class Recipe:
    """A task's default training recipe: a registered optimizer (:mod:`envs.training.optim`), its rate and steps."""

    optimizer: str = "adam"
    """Name of the optimizer in the registry of :mod:`envs.training.optim`."""
    lr: float = 1e-2
    """Learning rate."""
    steps: int = 1000
    """Number of optimizer steps, one batch each."""


class Task(ABC):
    """A seeded training problem. Subclasses set ``name``, ``Options``, ``recipe`` and implement the abstract parts.

    Args:
        options: an instance of the subclass's ``Options`` dataclass.
        device: where the data live and models are placed.
        dtype: floating dtype of the data and the models.
    """

    name: ClassVar[str]
    """Registry name, e.g. ``"digits_mlp"``."""
    Options: ClassVar[type[Any]]
    """Dataclass of the task's options (``envs.make_task(name, **options)`` validates against it)."""
    recipe: ClassVar[Recipe]
    """Default training recipe."""
    env_name: ClassVar[str | None] = None
    """Name in the Gymnasium id ``metaopt/<env_name>-v0``; derived from ``name`` when None."""

    def __init__(self, options: Any, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.options = options
        self.device = torch.device(device)
        self.dtype = dtype

    # -- to implement -------------------------------------------------------------------------------------------------

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model, drawing from the global RNG (``init_model`` seeds and isolates it)."""

    @abstractmethod
    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Scalar loss of model ``outputs`` against ``targets``."""

    @abstractmethod
    def batches(self, seed: int) -> Iterator[Batch]:
        """Endless stream of training batches for run ``seed``; full-batch tasks repeat one batch."""

    @abstractmethod
    def eval_data(self) -> Batch:
        """The whole fixed evaluation set as one batch (on ``self.device``)."""

    def valid_batches(self, seed: int) -> Iterator[Batch]:
        """Endless stream of held-out batches for run ``seed``, disjoint from training and evaluation data.

        What a meta-objective on held-out data (``objective.name=eval_loss``) scores.

        Raises:
            TaskError: the task has no held-out split (data tasks make one with ``options.valid_size``).
        """
        raise TaskError(
            f"task {self.name} has no held-out split for an eval_loss meta-objective; the data tasks make one from "
            "their training set with task options valid_size=N (for example tasks.0.options.valid_size=200)"
        )

    # -- provided -----------------------------------------------------------------------------------------------------

    eval_chunk: ClassVar[int] = 4096
    """Evaluation is done in chunks of at most this many examples, to bound memory."""

    def init_model(self, seed: int) -> nn.Module:
        """A new model initialised from ``seed``, on the task's device and dtype. The global RNG is left untouched."""
        with seeded(seed, "init"):
            model = self.build_model()
        return model.to(device=self.device, dtype=self.dtype)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """Scalar training loss of ``model`` on ``batch``."""
        inputs, targets = batch
        return self.criterion(model(inputs), targets)

    def eval_batches(self) -> list[Batch]:
        """The evaluation set split into chunks of at most ``eval_chunk`` examples (cached)."""
        return self._eval_batches

    @cached_property
    def _eval_batches(self) -> list[Batch]:
        inputs, targets = self.eval_data()
        n = targets.shape[0]
        return [
            (inputs[i : i + self.eval_chunk], targets[i : i + self.eval_chunk]) for i in range(0, n, self.eval_chunk)
        ]

    @torch.no_grad()
    def eval_loss(self, model: nn.Module) -> float:
        """Loss on the fixed evaluation set (the threshold loss for DSS): the example-weighted mean over chunks."""
        return self.eval_metrics(model)["loss"]

    @torch.no_grad()
    def eval_metrics(self, model: nn.Module) -> dict[str, float]:
        """Metrics on the evaluation set; at least ``loss``. Classification tasks add ``accuracy`` and ``error``."""
        total, count = 0.0, 0
        extra: dict[str, float] = {}
        for inputs, targets in self.eval_batches():
            outputs = model(inputs)
            weight = int(targets.shape[0])
            total += float(self.criterion(outputs, targets)) * weight
            count += weight
            for key, value in self.batch_metrics(outputs, targets).items():
                extra[key] = extra.get(key, 0.0) + value * weight
        metrics = {"loss": total / count}
        metrics.update({key: value / count for key, value in extra.items()})
        return metrics

    def batch_metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        """Per-batch metrics besides the loss (means over the batch); none by default."""
        return {}

    def load(self) -> Task:
        """Read the task's data now rather than on first use, so a missing file fails before any work is written."""
        self.eval_batches()
        next(iter(self.batches(0)))
        return self

    def instance(self, seed: int) -> Task:
        """The problem a run with ``seed`` trains on: ``self`` for fixed datasets, a new draw for problem families."""
        return self

    @cached_property
    def num_params(self) -> int:
        """Number of trainable scalars in the task's model."""
        return sum(p.numel() for p in self.init_model(0).parameters() if p.requires_grad)

    @property
    def spec(self) -> dict[str, Any]:
        """``{"name", "options"}``: enough for ``envs.make_task(**spec)``-style reconstruction."""
        return {"name": self.name, "options": dataclasses.asdict(self.options)}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self.options).items())
        return f"{type(self).__name__}({opts}; device={self.device}, dtype={self.dtype})"


def full_batches(batch: Batch) -> Iterator[Batch]:
    """The endless stream of a full-batch task: the same batch every step."""
    while True:
        yield batch


def minibatches(data: Batch, batch_size: int, seed: int, stream: str = "batches") -> Iterator[Batch]:
    """Endless stream of shuffled minibatches of exactly ``batch_size`` examples.

    Each epoch is a fresh permutation drawn from the stream ``(seed, stream)``; the last incomplete chunk of an
    epoch is dropped so every batch has the same shape (batched runs stack them).
    """
    inputs, targets = data
    n = targets.shape[0]
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the training set ({n} examples); lower batch_size")
    g = generator(seed, stream)
    while True:
        order = torch.randperm(n, generator=g).to(targets.device)
        for start in range(0, n - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield inputs[index], targets[index]
