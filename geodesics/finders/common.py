"""What the path finders share: endpoint checks, the wall-time budget, bead placement, round records, the result.

Every finder starts from pairs whose endpoints lie inside their level set (:func:`check_pairs`), places a new bead of
a failing segment at t* with a seeded jitter (:func:`new_bead`, its stream from :func:`bead_jitter`), notes each round
(:func:`round_record`) and assembles the :class:`~geodesics.path.BeadString` (:func:`finish_string`): connected only
when no budget gave out and every certified segment maximum is at most L0. The finders that take a level profile
(:mod:`geodesics.levels`) check their segments with :func:`profile_checks` and give beads their level with
:func:`bead_levels`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TypeVar

import torch
from torch import Tensor

from envs.seeding import generator
from geodesics.beads import require_batched_optimizer
from geodesics.curve import CurveConfig, SegmentMax, segment_maxima
from geodesics.finders.base import DSSConfig, Pair
from geodesics.levels import LevelProfile, Stretch, arc_fractions, stretches_offset
from geodesics.path import BeadString, RoundRecord
from geodesics.space import ParamSpace

__all__ = [
    "Budget",
    "PairFinder",
    "StackOptimizer",
    "bead_jitter",
    "bead_levels",
    "check_pairs",
    "finish_string",
    "new_bead",
    "pair_by_pair",
    "profile_checks",
    "round_record",
    "string_stretches",
]

PairFinder = Callable[[ParamSpace, Tensor, Tensor, float, Tensor, int, DSSConfig], BeadString]
"""``(space, a, b, threshold, endpoint_losses (2,), key, config) -> string``: a finder of one pair."""

Level = TypeVar("Level")
"""A pair's level as a pair finder takes it: a float, or a float or level profile (finders that take profiles)."""


class Budget:
    """Wall-time and loss-evaluation bookkeeping of one ``connect`` call.

    Args:
        max_seconds: wall-time budget (0: none).
        max_evaluations: budget of loss evaluations counted by ``space`` (0: none).
        space: the space whose :attr:`~geodesics.space.ParamSpace.evaluations` are counted from now on.
    """

    def __init__(self, max_seconds: float, max_evaluations: int = 0, space: ParamSpace | None = None):
        self.start = time.perf_counter()
        self.max_seconds = max_seconds
        self.max_evaluations = max_evaluations
        self._space = space
        self._first = space.evaluations if space is not None else 0

    @classmethod
    def of(cls, config: DSSConfig, space: ParamSpace) -> Budget:
        """The budgets of ``config`` (``max_seconds``, ``max_evaluations``), counting ``space``'s evaluations."""
        return cls(config.max_seconds, config.max_evaluations, space)

    @property
    def evaluations(self) -> int:
        """Loss evaluations since the run started (0 when no space is counted)."""
        return self._space.evaluations - self._first if self._space is not None else 0

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.start

    @property
    def expired(self) -> bool:
        """Whether the wall-time or the evaluation budget (if any) is spent."""
        return bool(self.exhausted(""))

    def exhausted(self, when: str) -> str:
        """The failure reason of a spent budget, ending with ``when`` (``"after 3 rounds"``); empty while both last."""
        if self.max_seconds > 0 and self.elapsed > self.max_seconds:
            return f"time: the {self.max_seconds:g} s budget ran out {when}".rstrip()
        if self.max_evaluations > 0 and self.evaluations >= self.max_evaluations:
            return (
                f"evaluations: the budget of {self.max_evaluations} loss evaluations ran out {when} "
                f"({self.evaluations} used)"
            )
        return ""


class StackOptimizer:
    """The bead optimizer of ``config`` (its functional twin) stepping a stack of points ``(M, P)`` as one batch.

    NEB moves its images and the trained curves their control points with it; every row has the learning rate
    ``lr`` (or ``config.lr``, or the task's recipe rate), and non-finite gradient entries are zeroed as in bead
    training.

    Args:
        config: the finder's settings (``optimizer``, ``lr``).
        space: the parameter space (its task gives the recipe learning rate).
        points: the stack the optimizer state is shaped after.
        lr: a finder's own learning rate (0: ``config.lr``).
    """

    def __init__(self, config: DSSConfig, space: ParamSpace, points: Tensor, lr: float = 0.0):
        self.rule = require_batched_optimizer(config.optimizer)
        self.state = self.rule.init({"theta": points})
        lr = lr or config.lr or space.task.recipe.lr
        self.rates = torch.full((points.shape[0],), float(lr), dtype=torch.float64, device=points.device)
        self.steps = 0

    def step(self, points: Tensor, grads: Tensor) -> Tensor:
        """The stack after one update along ``grads`` ``(M, P)``."""
        self.steps += 1
        grads = torch.nan_to_num(grads, nan=0.0, posinf=0.0, neginf=0.0)
        moved, self.state = self.rule.update({"theta": points}, {"theta": grads}, self.state, self.rates, self.steps)
        return moved["theta"]


def check_pairs(
    space: ParamSpace, pairs: Sequence[Pair], thresholds: Sequence[float | LevelProfile]
) -> tuple[list[Pair], Tensor]:
    """The pairs moved to the space's device and dtype, and their evaluation losses ``(N, 2)`` in float64.

    A pair under a level profile has ``a`` checked against the profile's level at s = 0 and ``b`` at s = 1.

    Raises:
        ValueError: a threshold that is not a finite positive loss, vectors of the wrong size, or an endpoint whose
            loss is above its pair's threshold.
    """
    for index, threshold in enumerate(thresholds):
        if isinstance(threshold, LevelProfile):
            continue  # a profile checks its own values when it is made
        if not (math.isfinite(threshold) and threshold > 0):
            which = f" of pair {index}" if len(thresholds) > 1 else ""
            raise ValueError(f"the threshold L0{which} must be a finite loss > 0, got {threshold}")
    checked = [(space.check(a), space.check(b)) for a, b in pairs]
    if not checked:
        return [], torch.empty(0, 2, dtype=torch.float64)
    endpoints = torch.stack([p for pair in checked for p in pair])
    losses = space.batched_eval_loss(endpoints).to(torch.float64).reshape(-1, 2)
    for index, (pair_losses, threshold) in enumerate(zip(losses.tolist(), thresholds)):
        for name, loss, fraction in zip("ab", pair_losses, (0.0, 1.0)):
            which = f"endpoint {name}" + (f" of pair {index}" if len(checked) > 1 else "")
            if isinstance(threshold, LevelProfile):
                level = threshold.at(fraction)
                if loss > level:
                    raise ValueError(
                        f"{which} has evaluation loss {loss:.6g} above its level L({fraction:g}) = {level:.6g} of "
                        f"the profile {threshold}: the path starts and ends under the profile. Train it below that "
                        "level first (geodesics.train_to_threshold) or raise the profile."
                    )
            elif loss > threshold:
                raise ValueError(
                    f"{which} has evaluation loss {loss:.6g} above the threshold L0 = {threshold:.6g}: DSS "
                    "connects points inside the level set. Train it below L0 first (geodesics.train_to_threshold) "
                    "or raise L0."
                )
    return checked, losses


def string_stretches(beads: Sequence[Tensor], profile: LevelProfile | None) -> list[Stretch | None]:
    """Where each segment of the string lies along it (its arc-length fractions), or ``None`` for a constant level."""
    if profile is None:
        return [None] * (len(beads) - 1)
    fractions = arc_fractions(beads).tolist()
    return [Stretch(profile, fractions[i], fractions[i + 1]) for i in range(len(beads) - 1)]


def profile_checks(
    space: ParamSpace, starts: Tensor, ends: Tensor, config: CurveConfig, stretches: Sequence[Stretch | None]
) -> list[SegmentMax]:
    """Certified maxima of the segments, each against its own level (:mod:`geodesics.levels`).

    A segment with a stretch gets the maximum of F - L(s) re-based onto its profile's reference level, so it passes
    when ``upper <= reference``; a segment without one gets :func:`~geodesics.curve.segment_maxima` unchanged.
    """
    return segment_maxima(space, starts, ends, config, offset=stretches_offset(stretches))


def bead_levels(beads: Sequence[Tensor], rows: Sequence[int], profile: LevelProfile) -> Tensor:
    """The profile's level ``(len(rows),)`` at the arc-length fractions of ``beads[rows]`` along the string."""
    return profile(arc_fractions(beads)[list(rows)])


def pair_by_pair(
    space: ParamSpace, pairs: Sequence[Pair], thresholds: Sequence[Level], endpoint_losses: Tensor,
    keys: Sequence[int], config: DSSConfig,
    connect_pair: Callable[[ParamSpace, Tensor, Tensor, Level, Tensor, int, DSSConfig], BeadString],
) -> list[BeadString]:  # fmt: skip
    """Run ``connect_pair`` on every pair in turn, each with its own budgets (finders that do not batch pairs)."""
    return [
        connect_pair(space, a, b, threshold, losses, key, config)
        for (a, b), threshold, losses, key in zip(pairs, thresholds, endpoint_losses, keys)
    ]


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
    accept: float | None = None,
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
        accept: the level a segment maximum must not exceed (default ``threshold``; greedy DSS with
            ``accept_factor`` gives ``accept_factor * threshold``).
    """
    accept = threshold if accept is None else accept
    connected = not reason and all(c.upper <= accept for c in checks)
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
