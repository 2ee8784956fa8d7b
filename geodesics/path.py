"""``BeadString``: a piecewise-linear path of models between two endpoints, and its metrics (DSS paper, §3).

The string holds its beads ``(K, P)`` including both endpoints, the loss of every bead, the certified maximum of every
segment, whether DSS connected the endpoints below the threshold (and if not, why), and the per-round history. Its
metrics are the paper's: the normalized geodesic length ``sum ||b_{i+1} - b_i|| / ||B - A||`` (1 for a straight
path), the number of beads (the paper counts both endpoints) and the maximum loss along the path. ``resample(n)`` and
``resample_at(fractions)`` give positions along the path by arc length. Every path finder of ``geodesics.finders``
returns its result as a ``BeadString``; ``save``/``load`` keep it on disk with the task spec and the settings used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from envs.tooling.runs import atomic_torch_save

__all__ = ["BeadString", "RoundRecord", "StringLoadError", "polyline_at"]

FORMAT_VERSION = 1


class StringLoadError(ValueError):
    """A file that is not a saved BeadString, or one saved by an incompatible version."""


@dataclass
class RoundRecord:
    """What one DSS round did."""

    round: int
    """Round number (0 is the check of the initial segment)."""
    num_beads: int
    """Beads on the string after the round, endpoints included."""
    new_beads: int
    """Beads inserted in the round."""
    failing_segments: int
    """Segments whose certified maximum is still above the threshold after the round."""
    worst_segment_max: float
    """Highest certified segment maximum after the round."""
    train_steps: int
    """Optimizer steps spent training the round's beads (the longest bead)."""
    seconds: float
    """Wall time since the start of ``connect``."""
    beads: Tensor | None = None
    """Snapshot of the string ``(K, P)`` after the round, when snapshots are kept (for plots)."""


@dataclass
class BeadString:
    """A DSS result. See the module docstring; shapes: beads (K, P), bead_losses (K,), segment_max (K - 1,)."""

    beads: Tensor
    """Beads ``(K, P)`` from A to B, both endpoints included, exactly as given."""
    bead_losses: Tensor
    """Evaluation loss of each bead ``(K,)``."""
    segment_max: Tensor
    """Largest evaluated loss along each segment ``(K - 1,)``."""
    segment_upper: Tensor
    """Certified upper bound of each segment's maximum ``(K - 1,)``."""
    segment_t: Tensor
    """Where along each segment (in [0, 1]) its maximum is ``(K - 1,)``."""
    threshold: float
    """The level L0 the path must stay under."""
    connected: bool
    """True when every segment's certified maximum is at most the threshold."""
    reason: str = ""
    """Why DSS stopped without connecting (empty when connected)."""
    method: str = "greedy"
    """The path finder that made it (``geodesics.finders``): ``greedy`` (Algorithm 1), ``constrained`` (Appendix A),
    ``neb``, ``bezier`` or ``polychain`` (whose beads are the images, or the vertices of the curve's polyline)."""
    history: list[RoundRecord] = field(default_factory=list)
    """Per-round records."""
    task: dict[str, Any] = field(default_factory=dict)
    """The task spec (``Task.spec``) the string lives in, so it can be re-evaluated."""
    config: dict[str, Any] = field(default_factory=dict)
    """The DSS settings used."""
    initial_segment_max: float = math.nan
    """Certified maximum of the straight segment A -> B before any bead (the linear-path barrier's peak)."""
    strategy: str = ""
    """How the space evaluated batches (``ParamSpace.strategy``: ``loop`` is exact, ``vmap`` rounds by batch)."""

    # -- metrics ------------------------------------------------------------------------------------------------------

    @property
    def failure(self) -> str:
        """Short form of ``reason``: ``rounds``, ``beads``, ``time``, ``bead N untrainable``, or empty."""
        if not self.reason:
            return ""
        if self.reason.startswith("bead "):
            return " ".join(self.reason.split()[:2]) + " untrainable"
        return self.reason.split(":")[0]

    @property
    def num_beads(self) -> int:
        """Number of beads, both endpoints included (the paper's count)."""
        return int(self.beads.shape[0])

    @property
    def segment_lengths(self) -> Tensor:
        """Euclidean length of each segment ``(K - 1,)`` in float64."""
        return (self.beads[1:].double() - self.beads[:-1].double()).norm(dim=1)

    @property
    def length(self) -> float:
        """Total length of the path."""
        return float(self.segment_lengths.sum())

    @property
    def normalized_length(self) -> float:
        """Path length over the straight distance ||B - A|| (1 for a straight path).

        A pair of identical endpoints (a copy of A aligned back onto A) has no straight distance: its path of length
        0 counts as straight (1), any longer path as infinitely long.
        """
        distance = float((self.beads[-1].double() - self.beads[0].double()).norm())
        if distance == 0:
            return 1.0 if self.length == 0 else float("inf")
        return self.length / distance

    @property
    def max_loss(self) -> float:
        """Largest loss evaluated along the path (max over segments)."""
        return float(self.segment_max.max())

    @property
    def max_loss_upper(self) -> float:
        """Certified upper bound of the loss along the path."""
        return float(self.segment_upper.max())

    @property
    def endpoint_loss(self) -> float:
        """The higher of the two endpoints' losses."""
        return float(max(self.bead_losses[0], self.bead_losses[-1]))

    @property
    def barrier(self) -> float:
        """Height of the path above its higher endpoint: ``max_loss - endpoint_loss``."""
        return self.max_loss - self.endpoint_loss

    @property
    def linear_barrier(self) -> float:
        """Height of the straight segment A -> B above the higher endpoint."""
        return self.initial_segment_max - self.endpoint_loss

    def metrics(self) -> dict[str, float | int | bool | str]:
        """The scalar summary written to records and reports."""
        return {
            "connected": self.connected,
            "reason": self.reason,
            "num_beads": self.num_beads,
            "normalized_length": self.normalized_length,
            "length": self.length,
            "max_loss": self.max_loss,
            "max_loss_upper": self.max_loss_upper,
            "barrier": self.barrier,
            "linear_barrier": self.linear_barrier,
            "threshold": self.threshold,
            "rounds": max((r.round for r in self.history), default=0),
            "seconds": self.history[-1].seconds if self.history else 0.0,
            "strategy": self.strategy,
        }

    # -- positions along the path -------------------------------------------------------------------------------------

    def resample(self, num: int) -> Tensor:
        """``(num, P)`` points equally spaced in arc length, the first exactly A and the last exactly B."""
        if num < 2:
            raise ValueError(f"num must be at least 2 (both endpoints), got {num}")
        return self.resample_at(torch.linspace(0.0, 1.0, num, dtype=torch.float64))

    def resample_at(self, fractions: Tensor) -> Tensor:
        """Points at arc-length fractions ``(n,)`` in [0, 1]."""
        return polyline_at(self.beads, fractions)

    # -- persistence --------------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the string atomically (tensors on CPU), with its task spec and config."""
        state = {
            "format": "BeadString",
            "version": FORMAT_VERSION,
            **{k: v for k, v in self.__dict__.items() if k != "history"},
            "history": [r.__dict__ for r in self.history],
        }
        state = {k: v.cpu() if isinstance(v, Tensor) else v for k, v in state.items()}
        for record in state["history"]:
            if isinstance(record.get("beads"), Tensor):
                record["beads"] = record["beads"].cpu()
        atomic_torch_save(state, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> BeadString:
        """Read a string written by :meth:`save`; a clear error for missing, corrupt or foreign files."""
        path = Path(path)
        if not path.is_file():
            raise StringLoadError(f"no string at {path}; pass the string.pt a geodesics command wrote")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises several types for truncated or foreign files
            raise StringLoadError(f"{path} is not a readable BeadString file ({type(exc).__name__}: {exc})") from None
        if not isinstance(state, dict) or state.get("format") != "BeadString":
            raise StringLoadError(f"{path} is not a BeadString file (it holds something else)")
        if state.get("version") != FORMAT_VERSION:
            raise StringLoadError(
                f"{path} was written by BeadString format version {state.get('version')}, this code reads version "
                f"{FORMAT_VERSION}; re-run the geodesics command that made it"
            )
        history = [RoundRecord(**r) for r in state.pop("history")]
        state.pop("format")
        state.pop("version")
        return cls(**state, history=history)


def polyline_at(points: Tensor, fractions: Tensor) -> Tensor:
    """Points at arc-length fractions ``(n,)`` in [0, 1] along the polyline ``points (K, P)``.

    Fractions 0 and 1 give ``points[0]`` and ``points[-1]`` exactly, whatever the rounding of the cumulative sum.
    """
    if fractions.min() < 0 or fractions.max() > 1:
        raise ValueError("arc-length fractions must lie in [0, 1]")
    lengths = (points[1:].double() - points[:-1].double()).norm(dim=1).cpu()
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), lengths.cumsum(0)])
    total = float(cumulative[-1])
    if total == 0:
        return points[:1].expand(len(fractions), -1).clone()
    targets = fractions.to(torch.float64).cpu() * total
    index = (torch.searchsorted(cumulative, targets, right=True) - 1).clamp(0, len(lengths) - 1)
    local = ((targets - cumulative[index]) / lengths[index].clamp(min=1e-300)).clamp(0.0, 1.0)
    start, end = points[index.to(points.device)], points[(index + 1).to(points.device)]
    out = torch.lerp(start, end, local.to(points.dtype).to(points.device).unsqueeze(1))
    out[(fractions == 1).to(points.device)] = points[-1]
    out[(fractions == 0).to(points.device)] = points[0]
    return out
