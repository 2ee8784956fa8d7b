"""CIFAR-10 from the local "python version" batches (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``)."""

from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from envs.data.locate import data_root, find_files

__all__ = ["load_cifar10"]

_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        labels = np.asarray(entry[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, EOFError, TypeError) as exc:
        raise ValueError(
            f"{path} is not a CIFAR-10 python batch ({exc}); expected the 'python version' files"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


@lru_cache(maxsize=2)
def load_cifar10(data_dir: str | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)``: images (N, 3, 32, 32) float64, labels int64.

    Images are standardised per channel with the training-set mean and standard deviation, labels int64.
    """
    root = data_root(data_dir)
    names = {name: [name] for name in [*_TRAIN, "test_batch"]}
    paths = find_files(
        root,
        ["cifar-10-batches-py", "", "cifar10"],
        names,
        "CIFAR-10",
        "They are the files of cifar-10-python.tar.gz (www.cs.toronto.edu/~kriz/cifar.html), extracted.",
    )
    train = [_read_batch(paths[name]) for name in _TRAIN]
    x_train = np.concatenate([x for x, _ in train]).astype(np.float64) / 255.0
    y_train = np.concatenate([y for _, y in train])
    x_test, y_test = _read_batch(paths["test_batch"])
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True) + 1e-8
    x_test_f = (x_test.astype(np.float64) / 255.0 - mean) / std
    x_train = (x_train - mean) / std
    return (torch.from_numpy(x_train), torch.from_numpy(y_train), torch.from_numpy(x_test_f), torch.from_numpy(y_test))
