"""Fixtures of the comparison-harness tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as ``metaopt compare`` runs by default (``threads=1``): tiny runs are fastest so, and
    OpenMP threads spin-wait badly when other processes share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
