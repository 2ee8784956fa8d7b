"""Seed derivation: one integer seed fans out into independent, named random streams.

A run seed drives several random choices (the initial weights, the order of the batches, the problem instance).
Deriving each stream from ``(seed, name)`` keeps them independent of each other and of the order in which code asks
for them, so adding a new random draw somewhere never shifts another one. Nothing here touches the global RNG.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["derive_seed", "generator", "seeded"]


def derive_seed(seed: int, *keys: str | int) -> int:
    """A 63-bit seed determined by ``seed`` and the stream name ``keys``.

    Args:
        seed: the user-facing seed.
        *keys: names of the stream, e.g. ``("batches",)`` or ``("pair", 3, "a")``.
    """
    text = "|".join([str(int(seed)), *map(str, keys)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def generator(seed: int, *keys: str | int) -> torch.Generator:
    """A CPU ``torch.Generator`` for the stream ``(seed, *keys)``."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *keys))
    return g


@contextmanager
def seeded(seed: int, *keys: str | int) -> Iterator[None]:
    """Run a block under the CPU global RNG seeded for ``(seed, *keys)``, restoring the global state afterwards.

    Used for module construction, where PyTorch's default initialisers draw from the global generator.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *keys))
        yield
