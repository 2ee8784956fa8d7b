"""Constrained Dynamic String Sampling (DSS paper, Appendix A), breadth-first.

The whole string evolves together towards a target level that is lowered in ``stages`` steps from the peak of the
straight segment down to L0 ("keeping the instantaneous loss of all models approximately constant"). At each level,
segments whose certified maximum is above it get a bead (at the refined argmax, or halfway), and then every interior
bead is trained on the augmented loss of Appendix A,

    F(theta_i) + C (||theta_{i-1} - theta_i|| + ||theta_{i+1} - theta_i||) + kappa |n_i . (theta_i - m_i)|,

with m_i the midpoint of the neighbours and n_i the unit normal of their bisecting hyperplane: the spring term C
controls how "springy" the string is and the kappa term how far a bead may leave the hyperplane. Neighbours are taken
at their current positions (all beads move at once). A level is done when all segments pass it; the run ends
connected when the last level, L0, is done, or with the reason a budget gave out.

Under a level profile L(s) (:mod:`geodesics.levels`) the stages are the profile scaled by the same factors (from the
chord's certified excess down to 1), every check compares the loss with the stage's profile at the points'
arc-length fractions along the current string, each interior bead is trained to alpha times the stage's level at
its fraction, and the final string is certified against the profile itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from geodesics.beads import BeadSchedule, Penalty, train_beads
from geodesics.curve import SegmentMax
from geodesics.finders.base import DSSConfig, Pair
from geodesics.finders.common import (
    Budget,
    bead_jitter,
    bead_levels,
    finish_string,
    new_bead,
    pair_by_pair,
    profile_checks,
    round_record,
    string_stretches,
)
from geodesics.finders.settings import ConstrainedConfig
from geodesics.levels import LevelProfile
from geodesics.path import BeadString
from geodesics.space import ParamSpace

__all__ = ["connect_constrained", "string_penalty"]


def string_penalty(a: Tensor, b: Tensor, spring: float, kappa: float) -> Penalty:
    """The Appendix A penalty of the interior beads of the string ``[a, *interior, b]``."""

    def penalty(interior: Tensor) -> tuple[Tensor, Tensor]:
        full = torch.cat([a.unsqueeze(0), interior, b.unsqueeze(0)])
        prev, here, nxt = full[:-2], full[1:-1], full[2:]
        to_prev, to_next = here - prev, here - nxt
        d_prev = to_prev.norm(dim=1, keepdim=True).clamp(min=1e-12)
        d_next = to_next.norm(dim=1, keepdim=True).clamp(min=1e-12)
        normal = prev - nxt
        normal = normal / normal.norm(dim=1, keepdim=True).clamp(min=1e-12)
        offset = ((here - (prev + nxt) / 2) * normal).sum(dim=1, keepdim=True)
        values = spring * (d_prev + d_next) + kappa * offset.abs()
        grads = spring * (to_prev / d_prev + to_next / d_next) + kappa * offset.sign() * normal
        return values.squeeze(1), grads

    return penalty


def connect_constrained(
    space: ParamSpace,
    pairs: Sequence[Pair],
    thresholds: Sequence[float | LevelProfile],
    endpoint_losses: Tensor,
    keys: Sequence[int],
    config: DSSConfig,
) -> list[BeadString]:
    """Constrained DSS of every pair, one after the other (a ``PathFinder``, registered as ``constrained``)."""
    return pair_by_pair(space, pairs, thresholds, endpoint_losses, keys, config, _connect_pair)


def _connect_pair(
    space: ParamSpace, a: Tensor, b: Tensor, level_of_pair: float | LevelProfile, endpoint_losses: Tensor, key: int,
    config: DSSConfig,
) -> BeadString:  # fmt: skip
    profile = level_of_pair if isinstance(level_of_pair, LevelProfile) else None
    threshold = level_of_pair.reference if isinstance(level_of_pair, LevelProfile) else level_of_pair
    budget = Budget.of(config, space)
    beads = [a, b]

    def check(against: LevelProfile | None) -> list[SegmentMax]:
        starts, ends = torch.stack(beads[:-1]), torch.stack(beads[1:])
        return profile_checks(space, starts, ends, config.curve, string_stretches(beads, against))

    checks = check(profile)
    initial = checks[0].upper
    history = [round_record(0, beads, 0, checks, threshold, 0, budget, config)]
    lr = config.lr or space.task.recipe.lr
    jitter = bead_jitter(config, key)
    start = max(initial, threshold)
    own = config.options(ConstrainedConfig)
    factors = [(start / threshold) ** ((own.stages - s) / own.stages) for s in range(1, own.stages + 1)]
    losses = endpoint_losses.tolist()
    reason = ""
    round_ = 0
    stage = profile
    for factor in factors:
        level = threshold * factor
        if profile is not None:  # the checks so far were against another stage's profile
            stage = profile.scaled(factor)
            level = stage.reference  # the level its checks are re-based onto
            checks = check(stage)
        while any(c.upper > level for c in checks) and not reason:
            if round_ == config.max_rounds:
                reason = f"rounds: max_rounds={config.max_rounds} used before the string passed level {level:.6g}"
                break
            if budget.expired:
                reason = budget.exhausted(f"after {round_} rounds")
                break
            round_ += 1
            failing = [i for i, c in enumerate(checks) if c.upper > level]
            if len(beads) + len(failing) > config.max_beads:
                reason = f"beads: {len(failing)} more beads would exceed max_beads={config.max_beads}"
                break
            for i in sorted(failing, reverse=True):
                beads.insert(i + 1, new_bead(beads[i], beads[i + 1], checks[i], config, jitter))
                losses.insert(i + 1, float("inf"))
            interior = torch.stack(beads[1:-1])
            if stage is None:
                targets = torch.full((len(interior),), config.alpha * level, dtype=torch.float64)
            else:  # alpha times the stage's level where each bead sits on the string
                targets = config.alpha * bead_levels(beads, range(1, len(beads) - 1), stage)
            schedule = BeadSchedule(
                max_steps=config.max_steps, lr=lr, optimizer=config.optimizer, check_every=config.check_every
            )  # no finish, no restarts: the string is one penalty
            trained = train_beads(space, interior, targets, schedule, seed=config.seed * 1000 + round_,
                                  penalty=string_penalty(a, b, own.spring, own.kappa))  # fmt: skip
            beads = [a, *trained.beads.unbind(0), b]
            losses = [losses[0], *trained.losses.tolist(), losses[-1]]
            checks = check(stage)
            steps = int(trained.steps.max())
            history.append(round_record(round_, beads, len(failing), checks, threshold, steps, budget, config))
            if not bool(trained.reached.all()):
                row = int((~trained.reached).nonzero()[0])
                target = "alpha*level" if stage is None else "alpha*L(s)"
                reason = (
                    f"bead {row + 1} could not reach its target {target} = {float(targets[row]):.6g} within "
                    f"max_steps={config.max_steps} (its loss: {float(trained.losses[row]):.6g})"
                )
        if reason:
            break
    if profile is not None and stage != profile:  # stopped at an earlier stage: certify against the profile itself
        checks = check(profile)
    return finish_string(space, beads, losses, checks, threshold, reason=reason, method="constrained", history=history,
                         config=config, initial_segment_max=initial)  # fmt: skip
