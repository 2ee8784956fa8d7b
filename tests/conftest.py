"""Shared fixtures: small stand-ins for the local-file datasets, written in their real formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """Write ``array`` (uint8) in the idx format of MNIST."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def learnable_images(n: int, channels: int, side: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise images whose label is written as a bright square at one of 10 positions (so a net can learn them)."""
    labels = rng.integers(0, 10, size=n)
    images = rng.integers(0, 60, size=(n, channels, side, side))
    cell = side // 4
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 4)
        images[i, :, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with tiny MNIST idx files (training files gzipped, test files not: both are accepted)."""
    root = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", 512, True), ("t10k", 128, False)):
        images, labels = learnable_images(n, 1, 28, rng)
        write_idx(root / f"{prefix}-images-idx3-ubyte", images[:, 0], gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return root


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``cifar-10-batches-py/`` with tiny python batches."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in [*((f"data_batch_{i}", 64) for i in range(1, 6)), ("test_batch", 64)]:
        images, labels = learnable_images(n, 3, 32, rng)
        entry = {b"data": images.reshape(n, -1), b"labels": labels.astype(int).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    return root


@pytest.fixture(scope="session")
def ptb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``ptb.{train,valid,test}.txt`` drawn from a tiny, learnable grammar."""
    root = tmp_path_factory.mktemp("ptb")
    rng = np.random.default_rng(2)
    subjects, verbs, objects = ["the cat", "a dog", "the market"], ["sees", "buys", "likes"], ["the fish", "<unk>", "N"]
    for split, n in (("train", 400), ("valid", 40), ("test", 60)):
        lines = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}" for _ in range(n)]
        (root / f"ptb.{split}.txt").write_text("\n".join(" " + line + " " for line in lines) + "\n")
    return root


@pytest.fixture(scope="session")
def data_dirs(mnist_dir: Path, cifar_dir: Path, ptb_dir: Path) -> dict[str, str]:
    """``data_dir`` option for each local-file task."""
    return {
        "mnist_mlp": str(mnist_dir),
        "mnist_cnn": str(mnist_dir),
        "cifar10_cnn": str(cifar_dir),
        "ptb_lstm": str(ptb_dir),
    }


@pytest.fixture(autouse=True)
def _own_baseline_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with an empty cache of tuned baselines of its own (and never writes to ``~/.cache``)."""
    monkeypatch.setenv("METAOPT_CACHE", str(tmp_path_factory.mktemp("metaopt-cache")))
