"""What the path finders share: endpoint checks, the wall-time budget, bead placement, round records, the result.

Every finder starts from pairs whose endpoints lie inside their level set (:func:`check_pairs`), places a new bead of
a failing segment at t* with a seeded jitter (:func:`new_bead`, its stream from :func:`bead_jitter`), notes each round
(:func:`round_record`) and assembles the :class:`~geodesics.path.BeadString` (:func:`finish_string`): connected only
when no budget gave out and every certified segment maximum is at most L0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict

import torch
from torch import Tensor

from envs.seeding import generator
from geodesics.curve import SegmentMax
from geodesics.finders.base import DSSConfig, Pair
from geodesics.path import BeadString, RoundRecord
from geodesics.space import ParamSpace

__all__ = ["Budget", "bead_jitter", "check_pairs", "finish_string", "new_bead", "round_record"]


class Budget:
    """Wall-time bookkeeping of one ``connect`` call."""

    def __init__(self, max_seconds: float):
        self.start = time.perf_counter()
        self.max_seconds = max_seconds

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.start

    @property
    def expired(self) -> bool:
        """Whether the wall-time budget (if any) is spent."""
        return self.max_seconds > 0 and self.elapsed > self.max_seconds


def check_pairs(space: ParamSpace, pairs: Sequence[Pair], thresholds: Sequence[float]) -> tuple[list[Pair], Tensor]:
    """The pairs moved to the space's device and dtype, and their evaluation losses ``(N, 2)`` in float64.

    Raises:
        ValueError: a threshold that is not a finite positive loss, vectors of the wrong size, or an endpoint whose
            loss is above its pair's threshold.
    """
    for index, threshold in enumerate(thresholds):
        if not (math.isfinite(threshold) and threshold > 0):
            which = f" of pair {index}" if len(thresholds) > 1 else ""
            raise ValueError(f"the threshold L0{which} must be a finite loss > 0, got {threshold}")
    checked = [(space.check(a), space.check(b)) for a, b in pairs]
    if not checked:
        return [], torch.empty(0, 2, dtype=torch.float64)
    endpoints = torch.stack([p for pair in checked for p in pair])
    losses = space.batched_eval_loss(endpoints).to(torch.float64).reshape(-1, 2)
    for index, (pair_losses, threshold) in enumerate(zip(losses.tolist(), thresholds)):
        for name, loss in zip("ab", pair_losses):
            if loss > threshold:
                which = f"endpoint {name}" + (f" of pair {index}" if len(checked) > 1 else "")
                raise ValueError(
                    f"{which} has evaluation loss {loss:.6g} above the threshold L0 = {threshold:.6g}: DSS "
                    "connects points inside the level set. Train it below L0 first (geodesics.train_to_threshold) "
                    "or raise L0."
                )
    return checked, losses


def bead_jitter(config: DSSConfig, key: int) -> torch.Generator:
    """The stream of the bead jitter of the pair with ``key``."""
    return generator(config.seed, "bead-noise", key)


def new_bead(left: Tensor, right: Tensor, check: SegmentMax, config: DSSConfig, jitter: torch.Generator) -> Tensor:
    """The initial position of the bead of a failing segment: at t* (kept off the ends), plus the seeded jitter."""
    t = 0.5 if config.t_star == "midpoint" else min(max(check.t, 0.01), 0.99)
    bead = torch.lerp(left, right, t)
    if config.bead_noise > 0:
        scale = config.bead_noise * float((right - left).norm()) / max(1.0, bead.numel()) ** 0.5
        noise = torch.randn(bead.shape, generator=jitter, dtype=torch.float64).to(bead.device, bead.dtype)
        bead = bead + scale * noise
    return bead


def round_record(
    round_: int, beads: list[Tensor], new: int, checks: list[SegmentMax], threshold: float, steps: int,
    budget: Budget, config: DSSConfig,
) -> RoundRecord:  # fmt: skip
    """The history entry of a round (with a CPU snapshot of the string when snapshots are kept)."""
    return RoundRecord(
        round=round_,
        num_beads=len(beads),
        new_beads=new,
        failing_segments=sum(c.upper > threshold for c in checks),
        worst_segment_max=max(c.upper for c in checks),
        train_steps=steps,
        seconds=budget.elapsed,
        beads=torch.stack(beads).cpu().clone() if config.keep_snapshots else None,
    )


def finish_string(
    space: ParamSpace, beads: list[Tensor], losses: list[float], checks: list[SegmentMax], threshold: float, *,
    reason: str, method: str, history: list[RoundRecord], config: DSSConfig, initial_segment_max: float,
) -> BeadString:  # fmt: skip
    """Assemble the result; connected only when no budget gave out and every certified segment maximum is <= L0.

    Args:
        space: the parameter space (its task spec and evaluation strategy are recorded).
        beads: the string, endpoints included, each ``(P,)``.
        losses: evaluation loss of each bead.
        checks: certified maximum of each segment.
        threshold: the level L0.
        reason: why the finder stopped without connecting (empty when it did not give up).
        method: the finder's registered name.
        history: the per-round records.
        config: the settings used (recorded).
        initial_segment_max: certified maximum of the straight segment before any bead.
    """
    connected = not reason and all(c.upper <= threshold for c in checks)
    return BeadString(
        beads=torch.stack(beads),
        bead_losses=torch.tensor(losses, dtype=torch.float64),
        segment_max=torch.tensor([c.value for c in checks], dtype=torch.float64),
        segment_upper=torch.tensor([c.upper for c in checks], dtype=torch.float64),
        segment_t=torch.tensor([c.t for c in checks], dtype=torch.float64),
        threshold=float(threshold),
        connected=connected,
        reason="" if connected else reason,
        method=method,
        history=history,
        task=space.task.spec,
        config=asdict(config),
        initial_segment_max=initial_segment_max,
        strategy=space.strategy,
    )
