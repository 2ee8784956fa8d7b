"""``connect`` and ``connect_many``: check the pairs, then run the path finder ``DSSConfig.method`` names."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from geodesics.finders.base import DSSConfig, Pair, get_finder
from geodesics.finders.common import check_pairs
from geodesics.path import BeadString
from geodesics.space import ParamSpace

__all__ = ["connect", "connect_many"]


def connect(space: ParamSpace, a: Tensor, b: Tensor, threshold: float, config: DSSConfig | None = None) -> BeadString:
    """Connect ``a`` and ``b`` by a string of beads whose linearly interpolated loss stays at most ``threshold``.

    Args:
        space: the parameter space of the task.
        a: first endpoint ``(P,)``; returned bit-identical as ``beads[0]``.
        b: second endpoint ``(P,)``; returned bit-identical as ``beads[-1]``.
        threshold: the level L0 (on the task's evaluation loss).
        config: settings, including the path finder (``DSSConfig()``, greedy DSS, by default).

    Raises:
        ValueError: vectors of the wrong size, or an endpoint whose loss is above the threshold.
    """
    return connect_many(space, [(a, b)], threshold, config)[0]


def connect_many(
    space: ParamSpace,
    pairs: Sequence[Pair],
    threshold: float | Sequence[float],
    config: DSSConfig | None = None,
    keys: Sequence[int] | None = None,
) -> list[BeadString]:
    """Connect several independent pairs concurrently (greedy DSS trains a round's beads of all strings as one batch).

    Every string follows exactly the rules of :func:`connect` with its own budgets; only the work is shared. The
    bead jitter of a string is drawn from its own stream (``keys[i]``, default its position; :func:`connect` uses 0)
    and the training batches of round r are the same for every string, so a string's result does not depend on which
    other strings run beside it: bit for bit with the exact (loop) evaluation strategy, the CPU default, and up to
    the rounding of batched kernels with ``vmap``. ``threshold`` is one level for all pairs or one per pair.
    """
    config = config or DSSConfig()
    keys = list(range(len(pairs))) if keys is None else list(keys)
    levels = [float(threshold)] * len(pairs) if isinstance(threshold, (int, float)) else [float(t) for t in threshold]
    if len(keys) != len(pairs) or len(levels) != len(pairs):
        raise ValueError(f"got {len(keys)} keys and {len(levels)} thresholds for {len(pairs)} pairs")
    finder = get_finder(config.method)
    checked, losses = check_pairs(space, pairs, levels)
    if not checked:
        return []
    return finder(space, checked, levels, losses, keys, config)
