"""Greedy Dynamic String Sampling (DSS paper, Algorithm 1), run breadth-first over many pairs at once.

The string starts as [A, B]. Each round, every segment whose certified maximum exceeds L0 gets a bead at t* (the
refined argmax of its curve, or 0.5), all new beads are trained together to alpha * L0 (``geodesics.beads``), and only
the new segments are checked again (``geodesics.curve``). Unlike the public reference code (which recurses
depth-first, trains one bead at a time, builds a graph per interpolation point and never checks t = 1), this always
terminates: a round, bead, step or wall-time budget that runs out, or a bead that cannot reach its target, ends the
run with ``connected=False`` and the reason. The beads of every string of a round train as one batch; each string
keeps its own budgets and jitter stream, so a string's result does not depend on the strings beside it.

Under a level profile L(s) (:mod:`geodesics.levels`) a segment is certified against the profile at the arc-length
fractions of its points along the current string, a new bead is trained to alpha L(s) at the fraction where it is
inserted, and, since an insertion moves the fractions of every segment, the whole string is checked again after
each round (not only the new segments): its final checks are those of its final fractions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from geodesics.beads import train_beads
from geodesics.curve import SegmentMax
from geodesics.finders.base import DSSConfig, Pair
from geodesics.finders.common import (
    Budget,
    bead_jitter,
    bead_levels,
    finish_string,
    new_bead,
    profile_checks,
    round_record,
    string_stretches,
)
from geodesics.finders.settings import GreedyConfig
from geodesics.levels import LevelProfile
from geodesics.path import BeadString, RoundRecord
from geodesics.space import ParamSpace

__all__ = ["connect_greedy"]

_PROGRESS = logging.getLogger("geodesics.progress")


class _GreedyString:
    """The state of one string during greedy DSS."""

    def __init__(
        self, key: int, a: Tensor, b: Tensor, losses: list[float], level: float | LevelProfile, config: DSSConfig
    ):
        self.profile = level if isinstance(level, LevelProfile) else None
        self.threshold = level.reference if isinstance(level, LevelProfile) else level
        self.accept = config.options(GreedyConfig).accept_factor * self.threshold
        self.beads = [a, b]
        self.losses = losses
        self.checks: list[SegmentMax] = []
        self.history: list[RoundRecord] = []
        self.reason = ""
        self.done = False
        self.failing: list[int] = []
        self.targets: list[float] = []
        self.jitter = bead_jitter(config, key)

    def plan(self, config: DSSConfig, round_: int, budget: Budget) -> list[Tensor]:
        """New beads for this round (empty when the string is done, with its reason set when it failed)."""
        self.failing = [i for i, c in enumerate(self.checks) if c.upper > self.accept]
        if round_ == 1 and config.options(GreedyConfig).split_chord:
            self.failing = [0]
        if not self.failing:
            self.done = True
        elif budget.expired:
            self.reason = budget.exhausted(f"after {round_ - 1} rounds")
        elif len(self.beads) + len(self.failing) > config.max_beads:
            self.reason = (
                f"beads: {len(self.failing)} more beads would exceed max_beads={config.max_beads} "
                f"({len(self.beads)} on the string)"
            )
        if self.reason:
            self.done = True
        if self.done:
            return []
        beads, checks = self.beads, self.checks
        inits = [new_bead(beads[i], beads[i + 1], checks[i], config, self.jitter) for i in self.failing]
        if self.profile is None:
            self.targets = [config.alpha * self.threshold] * len(inits)
        else:  # alpha times the profile where each bead goes in, on the string with this round's beads inserted
            placed, rows = list(beads), []
            for rank, (i, bead) in enumerate(zip(self.failing, inits)):
                placed.insert(i + 1 + rank, bead)
                rows.append(i + 1 + rank)
            self.targets = (config.alpha * bead_levels(placed, rows, self.profile)).tolist()
        return inits

    def insert(self, beads: Tensor, losses: Tensor, reached: Tensor, config: DSSConfig) -> None:
        """Insert the trained beads after their segments' left ends; note the first that missed its target."""
        for row, i in sorted(enumerate(self.failing), key=lambda pair: -pair[1]):  # from the right: indices hold
            self.beads.insert(i + 1, beads[row])
            self.losses.insert(i + 1, float(losses[row]))
        if not bool(reached.all()):
            row = int((~reached).nonzero()[0])
            position = self.failing[row] + 1 + row  # where the bead landed once the earlier ones were inserted
            target = "alpha*L0" if self.profile is None else "alpha*L(s)"
            own = config.options(GreedyConfig)
            self.reason = (
                f"bead {position} could not reach its target {target} = {self.targets[row]:.6g} within "
                f"max_steps={config.max_steps}"
                + (f" and finish_steps={own.finish_steps} ({own.finish})" if own.finish != "none" else "")
                + (f", restarted {own.restarts} times" if own.restarts else "")
                + f" (its loss: {float(losses[row]):.6g})"
            )
            self.done = True

    def fresh_segments(self) -> list[int]:
        """Segments of the new string that need a check: both halves of every split segment.

        Under a varying profile, every segment: an insertion moves the arc-length fractions of them all.
        """
        if self.profile is not None:
            return list(range(len(self.beads) - 1))
        return [i + rank + half for rank, i in enumerate(self.failing) for half in (0, 1)]

    def update_checks(self, results: list[SegmentMax]) -> None:
        """Merge the checks of the fresh segments with the kept ones."""
        if self.profile is not None:
            self.checks = list(results)
            return
        split = set(self.failing)
        merged: list[SegmentMax | None] = []
        for i, check in enumerate(self.checks):
            merged += [None, None] if i in split else [check]
        for j, result in zip(self.fresh_segments(), results):
            merged[j] = result
        self.checks = [c for c in merged if c is not None]


def connect_greedy(
    space: ParamSpace,
    pairs: Sequence[Pair],
    thresholds: Sequence[float | LevelProfile],
    endpoint_losses: Tensor,
    keys: Sequence[int],
    config: DSSConfig,
) -> list[BeadString]:
    """Greedy DSS of every pair (a :class:`~geodesics.finders.base.PathFinder`, registered as ``greedy``)."""
    own = config.options(GreedyConfig)
    budget = Budget.of(config, space)
    strings = [
        _GreedyString(key, a, b, pair_losses.tolist(), level, config)
        for key, (a, b), pair_losses, level in zip(keys, pairs, endpoint_losses, thresholds)
    ]
    starts = torch.stack([a for a, _ in pairs])
    ends = torch.stack([b for _, b in pairs])
    chords = [string_stretches(s.beads, s.profile)[0] for s in strings]
    for s, check in zip(strings, profile_checks(space, starts, ends, config.curve, chords)):
        s.checks = [check]
        s.history.append(round_record(0, s.beads, 0, s.checks, s.accept, 0, budget, config))
    initial = [s.checks[0].upper for s in strings]
    schedule = own.schedule(config.max_steps, config.lr or space.task.recipe.lr, config.optimizer, config.check_every)
    for round_ in range(1, config.max_rounds + 1):
        plans = [(s, s.plan(config, round_, budget)) for s in strings if not s.done]
        plans = [(s, inits) for s, inits in plans if inits]
        if not plans:
            break
        inits = torch.stack([bead for _, beads in plans for bead in beads])
        targets = torch.tensor([target for s, _ in plans for target in s.targets], dtype=torch.float64)
        normals = None
        if own.hyperplane:  # each bead's segment direction: it moves orthogonally to it
            directions = torch.stack([s.beads[i + 1] - s.beads[i] for s, _ in plans for i in s.failing])
            normals = directions / directions.norm(dim=1, keepdim=True).clamp(min=torch.finfo(directions.dtype).tiny)
        trained = train_beads(space, inits, targets, schedule, seed=config.seed * 1000 + round_,
                              normals=normals)  # fmt: skip
        rows, offset = [], 0
        for s, beads in plans:
            rows.append(slice(offset, offset + len(beads)))
            offset += len(beads)
            sl = rows[-1]
            s.insert(trained.beads[sl], trained.losses[sl], trained.reached[sl], config)
        fresh = [(s, s.fresh_segments(), string_stretches(s.beads, s.profile)) for s, _ in plans]
        segments = [(s, j, stretches[j]) for s, js, stretches in fresh for j in js]
        results = profile_checks(space, torch.stack([s.beads[j] for s, j, _ in segments]),
                                 torch.stack([s.beads[j + 1] for s, j, _ in segments]), config.curve,
                                 [stretch for _, _, stretch in segments])  # fmt: skip
        first = 0
        for (s, beads), sl, (_, js, _) in zip(plans, rows, fresh):
            s.update_checks(results[first : first + len(js)])
            first += len(js)
            steps = int(trained.steps[sl].max())
            s.history.append(round_record(round_, s.beads, len(beads), s.checks, s.accept, steps, budget, config))
        if _PROGRESS.isEnabledFor(logging.INFO):
            above = sum(c.upper > s.accept for s in strings for c in s.checks)
            _PROGRESS.info("round %d of at most %d: beads trained %d, segments still above the level %d", round_,
                           config.max_rounds, len(inits), above)  # fmt: skip
    out = []
    for s, peak in zip(strings, initial):
        remaining = sum(c.upper > s.accept for c in s.checks)
        if remaining and not s.reason:
            level = "L0" if s.profile is None else "their level"
            level = level if own.accept_factor == 1 else f"{own.accept_factor:g} times {level}"
            s.reason = f"rounds: max_rounds={config.max_rounds} used and {remaining} segments are still above {level}"
        out.append(finish_string(space, s.beads, s.losses, s.checks, s.threshold, reason=s.reason, method="greedy",
                                 history=s.history, config=config, initial_segment_max=peak,
                                 accept=s.accept))  # fmt: skip
    return out
