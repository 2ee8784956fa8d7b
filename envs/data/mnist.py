"""MNIST from local files in the standard idx format (``train-images-idx3-ubyte`` etc., gzipped or not)."""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from envs.data.locate import data_root, find_files

__all__ = ["load_mnist", "read_idx"]

_IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped): magic ``0 0 dtype ndim``, big-endian int32 sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number); expected the standard MNIST format")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: header says {shape} ({expected} bytes), found {len(raw) - offset}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)


@lru_cache(maxsize=2)
def load_mnist(data_dir: str | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)``: images float64 in [0, 1] of shape (N, 1, 28, 28), labels int64.

    Looks in ``data_dir`` (or ``$METAOPT_DATA``, or ``./data``) and its ``mnist/`` and ``MNIST/raw/`` folders.
    """
    root = data_root(data_dir)
    names = {key: [name, name + ".gz"] for key, name in _FILES.items()}
    paths = find_files(
        root,
        ["", "mnist", "MNIST/raw"],
        names,
        "MNIST",
        "They are the four idx files of the MNIST database (yann.lecun.com/exdb/mnist), gzipped or not.",
    )
    arrays = {key: read_idx(path) for key, path in paths.items()}
    out = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"MNIST {split} files disagree: images {images.shape}, labels {labels.shape}")
        out.append(torch.from_numpy(images.astype(np.float64) / 255.0).unsqueeze(1))
        out.append(torch.from_numpy(labels.astype(np.int64)))
    return out[0], out[1], out[2], out[3]
