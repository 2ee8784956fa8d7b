"""``connect`` and ``connect_many``: check the pairs, then run the path finder ``DSSConfig.finder`` names.

The level of a pair is a number L0 or a :class:`~geodesics.levels.LevelProfile`; a constant profile reaches the
finder as its float (so every finder takes it, with today's results), a varying one only a finder registered with
``level_profiles=True`` (greedy and constrained DSS).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from geodesics.finders.base import DSSConfig, Pair, get_finder, list_finders, takes_profiles
from geodesics.finders.common import check_pairs
from geodesics.levels import LevelProfile
from geodesics.path import BeadString
from geodesics.space import ParamSpace

__all__ = ["connect", "connect_many"]


def connect(
    space: ParamSpace, a: Tensor, b: Tensor, threshold: float | LevelProfile, config: DSSConfig | None = None
) -> BeadString:
    """Connect ``a`` and ``b`` by a string of beads whose linearly interpolated loss stays at most ``threshold``.

    Args:
        space: the parameter space of the task.
        a: first endpoint ``(P,)``; returned bit-identical as ``beads[0]``.
        b: second endpoint ``(P,)``; returned bit-identical as ``beads[-1]``.
        threshold: the level L0 (on the task's evaluation loss), or a level profile L(s) over the arc-length
            fraction s along the path (``geodesics.levels.Linear(start, end)``; greedy and constrained DSS). Under a
            profile the string's ``threshold`` is the profile's reference level and its segment maxima are those of
            F - L(s) re-based onto it (:mod:`geodesics.levels`).
        config: settings, including the path finder (``DSSConfig()``, greedy DSS, by default).

    Raises:
        ValueError: vectors of the wrong size, an endpoint whose loss is above its level, or a varying profile for a
            finder that certifies against a constant level only.
    """
    return connect_many(space, [(a, b)], threshold, config)[0]


def connect_many(
    space: ParamSpace,
    pairs: Sequence[Pair],
    threshold: float | LevelProfile | Sequence[float | LevelProfile],
    config: DSSConfig | None = None,
    keys: Sequence[int] | None = None,
) -> list[BeadString]:
    """Connect several independent pairs concurrently (greedy DSS trains a round's beads of all strings as one batch).

    Every string follows exactly the rules of :func:`connect` with its own budgets; only the work is shared. The
    bead jitter of a string is drawn from its own stream (``keys[i]``, default its position; :func:`connect` uses 0)
    and the training batches of round r are the same for every string, so a string's result does not depend on which
    other strings run beside it: bit for bit with the exact (loop) evaluation strategy, the CPU default, and up to
    the rounding of batched kernels with ``vmap``. ``threshold`` is one level (or profile) for all pairs or one per
    pair.
    """
    config = config or DSSConfig()
    keys = list(range(len(pairs))) if keys is None else list(keys)
    given = [threshold] * len(pairs) if isinstance(threshold, (int, float, LevelProfile)) else list(threshold)
    levels = [_level(t) for t in given]
    if len(keys) != len(pairs) or len(levels) != len(pairs):
        raise ValueError(f"got {len(keys)} keys and {len(levels)} thresholds for {len(pairs)} pairs")
    finder = get_finder(config.finder.name)
    varying = [level for level in levels if isinstance(level, LevelProfile)]
    if varying and not takes_profiles(config.finder.name):
        able = ", ".join(name for name in list_finders() if takes_profiles(name))
        raise ValueError(
            f"path finder {config.finder.name} certifies a path against one constant level; the level profile "
            f"{varying[0]} varies along the path, which only {able} take"
        )
    checked, losses = check_pairs(space, pairs, levels)
    if not checked:
        return []
    return finder(space, checked, levels, losses, keys, config)


def _level(threshold: float | LevelProfile) -> float | LevelProfile:
    """A plain float for a number or a constant profile (every finder takes it), the profile where it varies."""
    if isinstance(threshold, LevelProfile):
        return threshold.reference if threshold.is_constant else threshold
    return float(threshold)  # checked by check_pairs, with the message of a bad L0
