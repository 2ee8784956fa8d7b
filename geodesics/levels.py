"""Level profiles: the level a path must stay under, as a function of the arc-length fraction s in [0, 1] along it.

DSS (paper, Algorithm 1 and Appendix A) certifies a path inside one level set {F <= L0}: the constant profile
:class:`Constant`. A profile that varies along the path asks more of it; :class:`Linear` from ``start`` at A to
``end`` at B is the targets' ``descent`` profile, F(theta_t) - s (F(theta_t) - F(theta_{t+T})) plus slack: a path
under it falls steadily. The greedy and constrained finders take either (``connect(space, a, b, profile)``).

How a profile is certified: a point of segment i of the current string, at t in [0, 1] along it, sits at the
arc-length fraction s = s_i + t (s_{i+1} - s_i) of the string (:func:`arc_fractions`), and the segment check
(:func:`~geodesics.curve.segment_maxima` with an ``offset``) certifies the maximum over t of the excess
F(theta(t)) - L(s), re-based onto the profile's :attr:`~LevelProfile.reference` level (the string's ``threshold``):
a segment passes when ``upper <= reference``, exactly as a segment of a constant level passes when ``upper <= L0``.
Inserting a bead moves the fractions of every segment, so a string under a varying profile is re-checked in full
after every round and its final checks are those of its final fractions. A constant profile takes none of this: the
finders run it as they always did, bit for bit.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from envs.tooling.config import check_range

__all__ = ["Constant", "LevelProfile", "Linear", "Stretch", "arc_fractions", "as_profile", "stretches_offset"]


class LevelProfile(ABC):
    """A level L(s) > 0 for every arc-length fraction s in [0, 1]; subclasses are frozen dataclasses."""

    @abstractmethod
    def __call__(self, fractions: Tensor) -> Tensor:
        """The level at each fraction ``(...,)`` (float64, on the fractions' device)."""

    @property
    @abstractmethod
    def reference(self) -> float:
        """The level the string records as its ``threshold`` and its segment checks are measured on (the highest)."""

    @abstractmethod
    def scaled(self, factor: float) -> LevelProfile:
        """The profile times ``factor`` (constrained DSS lowers its stages this way)."""

    @property
    def is_constant(self) -> bool:
        """Whether the level is the same all along (the finders then run exactly as for a plain L0)."""
        return False

    def at(self, fraction: float) -> float:
        """The level at one fraction."""
        return float(self(torch.tensor([fraction], dtype=torch.float64))[0])

    def spec(self) -> dict[str, Any]:
        """A plain description (``{"kind": "linear", "start": ..., "end": ...}``) for records."""
        return {"kind": type(self).__name__.lower(), **self.__dict__}


@dataclass(frozen=True)
class Constant(LevelProfile):
    """L(s) = level: one level set, the paper's L0."""

    level: float

    def __post_init__(self) -> None:
        check_range(self, "level", low=0, low_open=True)

    def __call__(self, fractions: Tensor) -> Tensor:  # noqa: D102 (the base class says it)
        return torch.full_like(fractions, self.level, dtype=torch.float64)

    @property
    def reference(self) -> float:  # noqa: D102
        return self.level

    def scaled(self, factor: float) -> Constant:  # noqa: D102
        return Constant(self.level * factor)

    @property
    def is_constant(self) -> bool:  # noqa: D102
        return True


@dataclass(frozen=True)
class Linear(LevelProfile):
    """L(s) = start + s (end - start): from ``start`` at A to ``end`` at B (``descent``: start > end)."""

    start: float
    end: float

    def __post_init__(self) -> None:
        check_range(self, "start", low=0, low_open=True)
        check_range(self, "end", low=0, low_open=True)

    def __call__(self, fractions: Tensor) -> Tensor:  # noqa: D102
        s = fractions.to(torch.float64)
        return self.start + s * (self.end - self.start)

    @property
    def reference(self) -> float:  # noqa: D102
        return max(self.start, self.end)

    def scaled(self, factor: float) -> Linear:  # noqa: D102
        return Linear(self.start * factor, self.end * factor)

    @property
    def is_constant(self) -> bool:  # noqa: D102
        return self.start == self.end


def as_profile(level: float | LevelProfile) -> LevelProfile:
    """A profile from a plain level (``Constant``) or the profile itself.

    Raises:
        TypeError: neither a number nor a :class:`LevelProfile`.
    """
    if isinstance(level, LevelProfile):
        return level
    if isinstance(level, (int, float)) and not isinstance(level, bool):
        return Constant(float(level))
    raise TypeError(f"a level is a number (L0) or a geodesics LevelProfile (Constant, Linear), got {level!r}")


def arc_fractions(beads: Sequence[Tensor] | Tensor) -> Tensor:
    """Arc-length fraction of every bead of the string ``(K, P)``: ``(K,)`` float64 on the CPU, 0 first, 1 last.

    A string of length 0 (identical endpoints) spreads its beads evenly, so every bead still has a position.
    """
    points = beads if isinstance(beads, Tensor) else torch.stack(list(beads))
    lengths = (points[1:].double() - points[:-1].double()).norm(dim=1).cpu()
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), lengths.cumsum(0)])
    total = float(cumulative[-1])
    if total == 0 or not math.isfinite(total):
        return torch.linspace(0.0, 1.0, len(points), dtype=torch.float64)
    fractions = cumulative / total
    fractions[-1] = 1.0
    return fractions


@dataclass(frozen=True)
class Stretch:
    """Where one segment lies along its string: from fraction ``first`` to ``last``, under ``profile``."""

    profile: LevelProfile
    first: float
    last: float

    def offset(self, ts: Tensor) -> Tensor:
        """L(s(t)) - reference at the points ``ts`` ``(k,)`` of the segment (<= 0 for the highest level)."""
        fractions = self.first + ts.to(torch.float64) * (self.last - self.first)
        return self.profile(fractions) - self.profile.reference


def stretches_offset(stretches: Sequence[Stretch | None]) -> Callable[[Tensor], Tensor] | None:
    """The ``offset`` of :func:`~geodesics.curve.segment_maxima` for segments under these stretches.

    A segment without a stretch (a constant level) gets offset 0, which leaves its losses unchanged bit for bit;
    ``None`` when no segment has one (the plain check).
    """
    if all(stretch is None for stretch in stretches):
        return None

    def offset(ts: Tensor) -> Tensor:
        rows = [torch.zeros_like(row, dtype=torch.float64) if stretch is None else stretch.offset(row)
                for row, stretch in zip(ts, stretches)]  # fmt: skip
        return torch.stack(rows)

    return offset
