"""Small tabular problems from scikit-learn: four bundled tables and three synthetic ones drawn with a fixed seed.

The bundled tables are wine, breast_cancer, iris (classification) and diabetes (regression); the synthetic ones are
moons, classification and friedman1 (regression).

A new user's first test of an optimizer is often a small MLP on one of these tables, and none of them is in any
meta-training family here, so they serve as held-out and development tasks. The recipe is the textbook one (as in
scikit-learn's ``StandardScaler`` + ``train_test_split`` examples): a fixed random split (``split_seed``) keeps
``test_fraction`` of the rows apart as the evaluation set, and every feature is standardized with the mean and standard
deviation of the rows that train, never of the held-out or evaluation rows (a scaler fitted on all rows leaks the test
set into training). For ``diabetes`` the target is standardized the same way and the loss is the mean squared error, so
a constant predictor scores about 1; the classification sets use cross-entropy and report accuracy. Nothing is
downloaded: the bundled tables are files inside the scikit-learn package, and the synthetic ones are drawn by
``sklearn.datasets.make_*`` with fixed sizes, noise and ``random_state=0`` (:data:`SYNTHETIC`), so they are the same
rows on every machine. The held-out suite uses the four bundled tables; the development suite
(``configs/compare/dev_suite.yaml``, for choosing load-time options without looking at the held-out suite) the three
synthetic ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from envs.errors import TaskError
from envs.task import Batch, Recipe, Task, minibatches
from envs.task.nn import ACTIVATIONS, mlp
from envs.task.registry import register_task

__all__ = ["DATASETS", "SYNTHETIC", "TabularMLPOptions", "TabularMLPTask", "load_table", "split_rows"]

DATASETS = {"wine": 3, "breast_cancer": 2, "iris": 3, "diabetes": 0, "moons": 2, "classification": 3, "friedman1": 0}
"""The tables and their number of classes (0: regression)."""

SYNTHETIC: dict[str, tuple[str, dict[str, Any]]] = {
    "moons": ("make_moons", {"n_samples": 300, "noise": 0.25}),
    "classification": (
        "make_classification",
        {
            "n_samples": 300,
            "n_features": 20,
            "n_informative": 6,
            "n_redundant": 4,
            "n_classes": 3,
            "class_sep": 2.0,
            "flip_y": 0.02,
        },
    ),
    "friedman1": ("make_friedman1", {"n_samples": 300, "n_features": 10, "noise": 1.0}),
}
"""The synthetic tables: the ``sklearn.datasets`` generator and its arguments (always with ``random_state=0``)."""


def load_table(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x (n, d) float64, y (n,))`` of a bundled scikit-learn table; ``y`` int64 classes or float64 targets."""
    import sklearn.datasets

    if dataset in SYNTHETIC:
        generator, arguments = SYNTHETIC[dataset]
        data, target = getattr(sklearn.datasets, generator)(**arguments, random_state=0)
    else:
        bunch = getattr(sklearn.datasets, f"load_{dataset}")()
        data, target = bunch.data, bunch.target
    x = np.asarray(data, dtype=np.float64)
    y = np.asarray(target, dtype=np.int64 if DATASETS[dataset] else np.float64)
    return x, y


def split_rows(n: int, test_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` row indices of a fixed permutation; the first ``round(test_fraction * n)`` rows test."""
    order = np.random.RandomState(split_seed).permutation(n)
    n_test = int(round(test_fraction * n))
    if not 0 < n_test < n:
        raise TaskError(f"test_fraction={test_fraction} leaves {n_test} of {n} rows for testing; valid range (0, 1)")
    return order[n_test:], order[:n_test]


@dataclass
class TabularMLPOptions:
    """Options of ``tabular_mlp``."""

    dataset: str = "wine"
    """The table: wine, breast_cancer, iris, moons, classification (classification), diabetes or friedman1
    (regression)."""
    width: int = 32
    """Hidden units per layer."""
    depth: int = 1
    """Number of hidden layers."""
    activation: str = "relu"
    """Hidden non-linearity: sigmoid, relu, tanh or identity."""
    batch_size: int = 32
    """Training minibatch size."""
    test_fraction: float = 0.3
    """Share of the rows kept apart as the fixed evaluation set."""
    split_seed: int = 0
    """Seed of the fixed train/test permutation."""
    valid_size: int = 0
    """Training rows held out for a meta-objective on held-out batches (the last ones; 0: none)."""

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}")
        for key in ("width", "depth", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.valid_size < 0:
            raise ValueError(f"valid_size must be >= 0 (0: no held-out split), got {self.valid_size}")


@register_task
class TabularMLPTask(Task):
    """``tabular_mlp``: an MLP on a standardized scikit-learn table (wine by default), minibatches of 32."""

    name = "tabular_mlp"
    Options = TabularMLPOptions
    recipe = Recipe(optimizer="adam", lr=0.01, steps=300)

    @property
    def classes(self) -> int:
        """Number of classes (0 for the regression table)."""
        return DATASETS[self.options.dataset]

    def _split(self) -> tuple[Batch, Batch, Batch | None]:
        """``(train, evaluation, held-out or None)``, standardized with the statistics of the training rows."""
        if not hasattr(self, "_data"):
            o = self.options
            x, y = load_table(o.dataset)
            train, test = split_rows(len(y), o.test_fraction, o.split_seed)
            if o.valid_size >= len(train) - 1:
                raise TaskError(
                    f"task {self.name}: valid_size={o.valid_size} leaves too few training rows (there are "
                    f"{len(train)}); valid range 0 <= valid_size < {len(train) - 1}"
                )
            fit_rows = train[: len(train) - o.valid_size]  # the rows that train; statistics come from them alone
            mean, std = x[fit_rows].mean(axis=0), x[fit_rows].std(axis=0)
            x = (x - mean) / np.where(std > 0, std, 1.0)
            if not self.classes:
                y = (y - y[fit_rows].mean()) / y[fit_rows].std()

            def place(rows: np.ndarray) -> Batch:
                inputs = torch.from_numpy(x[rows]).to(self.device, self.dtype)
                targets = torch.from_numpy(y[rows]).to(self.device)
                return inputs, targets if self.classes else targets.to(self.dtype)

            held_out = place(train[len(fit_rows) :]) if o.valid_size else None
            self._data = (place(fit_rows), place(test), held_out)
        return self._data

    @override
    def build_model(self) -> nn.Module:
        o = self.options
        features = load_table(o.dataset)[0].shape[1]
        return mlp([features] + [o.width] * o.depth + [self.classes or 1], o.activation)

    @override
    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if self.classes:
            return F.cross_entropy(outputs, targets)
        return ((outputs.squeeze(-1) - targets) ** 2).mean()

    @override
    def batches(self, seed: int) -> Iterator[Batch]:
        return minibatches(self._split()[0], self.options.batch_size, seed)

    @override
    def valid_batches(self, seed: int) -> Iterator[Batch]:
        held_out = self._split()[2]
        if held_out is None:
            return super().valid_batches(seed)
        return minibatches(held_out, min(self.options.batch_size, len(held_out[1])), seed, stream="valid")

    @override
    def eval_data(self) -> Batch:
        return self._split()[1]

    @override
    def batch_metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        if not self.classes:
            return {}
        accuracy = float((outputs.argmax(dim=-1) == targets).to(torch.float64).mean())
        return {"accuracy": accuracy, "error": 1.0 - accuracy}
