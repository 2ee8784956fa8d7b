"""scikit-learn's bundled 8x8 handwritten digits (1,797 images) with a fixed train/test split."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = ["load_digits_split"]


@lru_cache(maxsize=4)
def load_digits_split(test_size: int = 500, split_seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)``: images as float64 in [0, 1] of shape (N, 64), labels as int64.

    The split is a fixed permutation (``split_seed``) so every run and every task sees the same test set.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    if not 0 < test_size < len(y):
        raise ValueError(f"test_size={test_size} must be between 1 and {len(y) - 1}")
    order = np.random.RandomState(split_seed).permutation(len(y))
    test, train = order[:test_size], order[test_size:]
    return (
        torch.from_numpy(x[train]),
        torch.from_numpy(y[train]),
        torch.from_numpy(x[test]),
        torch.from_numpy(y[test]),
    )
