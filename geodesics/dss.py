"""Greedy Dynamic String Sampling (DSS paper, Algorithm 1), run breadth-first, and the ``connect`` entry point.

The string starts as [A, B]. Each round, every segment whose certified maximum exceeds L0 gets a bead at t* (the
refined argmax of its curve, or 0.5), all new beads are trained together to alpha * L0 (``geodesics.beads``), and only
the new segments are checked again (``geodesics.curve``). Unlike the public reference code (which recurses
depth-first, trains one bead at a time, builds a graph per interpolation point and never checks t = 1), this always
terminates: a round, bead, step or wall-time budget that runs out, or a bead that cannot reach its target, ends the
run with ``connected=False`` and the reason.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from envs.seeding import generator
from geodesics.beads import train_beads
from geodesics.curve import CurveConfig, SegmentMax, segment_maxima
from geodesics.space import ParamSpace
from geodesics.string import BeadString, RoundRecord

__all__ = ["DSSConfig", "connect", "connect_many"]


@dataclass
class DSSConfig:
    """Settings of ``connect``."""

    method: str = "greedy"
    """``greedy`` (Algorithm 1, breadth-first) or ``constrained`` (Appendix A)."""
    alpha: float = 0.95
    """New beads are trained until their loss is at most alpha * L0."""
    t_star: str = "argmax"
    """Where a failing segment gets its bead: ``argmax`` of its curve or ``midpoint``."""
    max_rounds: int = 10
    """Rounds of bead insertion at most."""
    max_beads: int = 256
    """Beads on the string at most, endpoints included."""
    max_steps: int = 2000
    """Training steps per bead at most (constrained: per stage)."""
    max_seconds: float = 0.0
    """Wall-time budget in seconds (0: none)."""
    optimizer: str = "adam"
    """Bead optimizer: ``adam`` or ``sgd``."""
    lr: float = 0.0
    """Bead learning rate (0: the task's recipe learning rate)."""
    check_every: int = 10
    """Evaluate training beads every this many steps."""
    bead_noise: float = 1e-3
    """Gaussian jitter of new beads, relative to their segment's length (breaks exact symmetries; 0 to disable)."""
    seed: int = 0
    """Seed of the jitter and of the bead training batches."""
    keep_snapshots: bool = True
    """Keep a copy of the string after every round (for the Appendix D snapshot plots)."""
    curve: CurveConfig = field(default_factory=CurveConfig)
    """Grid and refinement of the segment checks."""
    spring: float = 0.0
    """Constrained only: C, weight of the spring term sum of distances to the neighbours."""
    kappa: float = 1.0
    """Constrained only: weight of the distance to the bisecting hyperplane of the neighbours."""
    stages: int = 4
    """Constrained only: number of target levels from the initial peak down to L0."""

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "constrained"):
            raise ValueError(f"method must be greedy or constrained, got {self.method!r}")
        if self.t_star not in ("argmax", "midpoint"):
            raise ValueError(f"t_star must be argmax or midpoint, got {self.t_star!r}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.max_rounds < 0 or self.max_beads < 2 or self.max_steps < 1 or self.stages < 1:
            raise ValueError("max_rounds >= 0, max_beads >= 2, max_steps >= 1 and stages >= 1 are required")


class Budget:
    """Wall-time bookkeeping shared by both methods."""

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


def connect(space: ParamSpace, a: Tensor, b: Tensor, threshold: float, config: DSSConfig | None = None) -> BeadString:
    """Connect ``a`` and ``b`` by a string of beads whose linearly interpolated loss stays at most ``threshold``.

    Args:
        space: the parameter space of the task.
        a: first endpoint ``(P,)``; returned bit-identical as ``beads[0]``.
        b: second endpoint ``(P,)``; returned bit-identical as ``beads[-1]``.
        threshold: the level L0 (on the task's evaluation loss).
        config: DSS settings (``DSSConfig()`` by default).

    Raises:
        ValueError: vectors of the wrong size, or an endpoint whose loss is above the threshold.
    """
    return connect_many(space, [(a, b)], threshold, config)[0]


def connect_many(
    space: ParamSpace,
    pairs: list[tuple[Tensor, Tensor]],
    threshold: float | Sequence[float],
    config: DSSConfig | None = None,
    keys: list[int] | None = None,
) -> list[BeadString]:
    """Connect several independent pairs concurrently: each round's beads of all strings train as one batch.

    Every string follows exactly the rules of :func:`connect` with its own budgets; only the work is shared. The
    bead jitter of a string is drawn from its own stream (``keys[i]``, default its position; :func:`connect` uses 0)
    and the training batches of round r are the same for every string, so a string's result does not depend on which
    other strings run beside it: bit for bit with the exact (loop) evaluation strategy, the CPU default, and up to
    the rounding of batched kernels with ``vmap``. ``threshold`` is one level for all pairs or
    one per pair.
    """
    config = config or DSSConfig()
    keys = list(range(len(pairs))) if keys is None else list(keys)
    levels = [float(threshold)] * len(pairs) if isinstance(threshold, (int, float)) else [float(t) for t in threshold]
    if len(keys) != len(pairs) or len(levels) != len(pairs):
        raise ValueError(f"got {len(keys)} keys and {len(levels)} thresholds for {len(pairs)} pairs")
    pairs = [(space.check(a), space.check(b)) for a, b in pairs]
    if not pairs:
        return []
    endpoints = torch.stack([p for pair in pairs for p in pair])
    losses = space.batched_eval_loss(endpoints).to(torch.float64).reshape(-1, 2)
    for index, (pair_losses, threshold) in enumerate(zip(losses.tolist(), levels)):
        for name, loss in zip("ab", pair_losses):
            if loss > threshold:
                which = f"endpoint {name}" + (f" of pair {index}" if len(pairs) > 1 else "")
                raise ValueError(
                    f"{which} has evaluation loss {loss:.6g} above the threshold L0 = {threshold:.6g}: DSS "
                    "connects points inside the level set. Train it below L0 first (geodesics.train_to_threshold) "
                    "or raise L0."
                )
    if config.method == "constrained":
        from geodesics.constrained import connect_constrained

        return [
            connect_constrained(space, a, b, level, config, pl, k)
            for (a, b), level, pl, k in zip(pairs, levels, losses, keys)
        ]
    return _connect_greedy(space, pairs, levels, config, losses, keys)


class _GreedyString:
    """The state of one string during greedy DSS."""

    def __init__(self, key: int, a: Tensor, b: Tensor, losses: list[float], threshold: float, config: DSSConfig):
        self.threshold = threshold
        self.beads = [a, b]
        self.losses = losses
        self.checks: list[SegmentMax] = []
        self.history: list[RoundRecord] = []
        self.reason = ""
        self.done = False
        self.failing: list[int] = []
        self.jitter = generator(config.seed, "bead-noise", key)

    def plan(self, config: DSSConfig, round_: int, budget: Budget) -> list[Tensor]:
        """New beads for this round (empty when the string is done, with its reason set when it failed)."""
        self.failing = [i for i, c in enumerate(self.checks) if c.upper > self.threshold]
        if not self.failing:
            self.done = True
        elif budget.expired:
            self.reason = f"time: the {config.max_seconds:g} s budget ran out after {round_ - 1} rounds"
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
        return [new_bead(beads[i], beads[i + 1], checks[i], config, self.jitter) for i in self.failing]

    def insert(self, beads: Tensor, losses: Tensor, reached: Tensor, config: DSSConfig) -> None:
        """Insert the trained beads after their segments' left ends; note the first that missed its target."""
        for row, i in sorted(enumerate(self.failing), key=lambda pair: -pair[1]):  # from the right: indices hold
            self.beads.insert(i + 1, beads[row])
            self.losses.insert(i + 1, float(losses[row]))
        if not bool(reached.all()):
            row = int((~reached).nonzero()[0])
            position = self.failing[row] + 1 + row  # where the bead landed once the earlier ones were inserted
            self.reason = (
                f"bead {position} could not reach its target alpha*L0 = {config.alpha * self.threshold:.6g} within "
                f"max_steps={config.max_steps} (its loss: {float(losses[row]):.6g})"
            )
            self.done = True

    def fresh_segments(self) -> list[int]:
        """Segments of the new string that need a check: both halves of every split segment."""
        return [i + rank + half for rank, i in enumerate(self.failing) for half in (0, 1)]

    def update_checks(self, results: list[SegmentMax]) -> None:
        """Merge the checks of the fresh segments with the kept ones."""
        split = set(self.failing)
        merged: list[SegmentMax | None] = []
        for i, check in enumerate(self.checks):
            merged += [None, None] if i in split else [check]
        for j, result in zip(self.fresh_segments(), results):
            merged[j] = result
        self.checks = [c for c in merged if c is not None]


def _connect_greedy(
    space: ParamSpace,
    pairs: list[tuple[Tensor, Tensor]],
    levels: list[float],
    config: DSSConfig,
    losses: Tensor,
    keys: list[int],
) -> list[BeadString]:
    budget = Budget(config.max_seconds)
    strings = [
        _GreedyString(key, a, b, pair_losses.tolist(), level, config)
        for key, (a, b), pair_losses, level in zip(keys, pairs, losses, levels)
    ]
    starts = torch.stack([a for a, _ in pairs])
    ends = torch.stack([b for _, b in pairs])
    for s, check in zip(strings, segment_maxima(space, starts, ends, config.curve)):
        s.checks = [check]
        s.history.append(round_record(0, s.beads, 0, s.checks, s.threshold, 0, budget, config))
    initial = [s.checks[0].upper for s in strings]
    lr = config.lr or space.task.recipe.lr
    for round_ in range(1, config.max_rounds + 1):
        plans = [(s, s.plan(config, round_, budget)) for s in strings if not s.done]
        plans = [(s, inits) for s, inits in plans if inits]
        if not plans:
            break
        inits = torch.stack([bead for _, beads in plans for bead in beads])
        targets = torch.tensor([config.alpha * s.threshold for s, beads in plans for _ in beads], dtype=torch.float64)
        trained = train_beads(space, inits, targets, max_steps=config.max_steps, lr=lr, optimizer=config.optimizer,
                              check_every=config.check_every, seed=config.seed * 1000 + round_)  # fmt: skip
        rows, offset = [], 0
        for s, beads in plans:
            rows.append(slice(offset, offset + len(beads)))
            offset += len(beads)
            sl = rows[-1]
            s.insert(trained.beads[sl], trained.losses[sl], trained.reached[sl], config)
        segments = [(s, j) for s, _ in plans for j in s.fresh_segments()]
        results = segment_maxima(space, torch.stack([s.beads[j] for s, j in segments]),
                                 torch.stack([s.beads[j + 1] for s, j in segments]), config.curve)  # fmt: skip
        for (s, beads), sl in zip(plans, rows):
            s.update_checks(results[2 * sl.start : 2 * sl.stop])
            steps = int(trained.steps[sl].max())
            s.history.append(round_record(round_, s.beads, len(beads), s.checks, s.threshold, steps, budget, config))
    out = []
    for s, peak in zip(strings, initial):
        remaining = sum(c.upper > s.threshold for c in s.checks)
        if remaining and not s.reason:
            s.reason = f"rounds: max_rounds={config.max_rounds} used and {remaining} segments are still above L0"
        out.append(finish_string(space, s.beads, s.losses, s.checks, s.threshold, s.reason, "greedy", s.history,
                                 config, peak))  # fmt: skip
    return out


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
    space: ParamSpace, beads: list[Tensor], losses: list[float], checks: list[SegmentMax], threshold: float,
    reason: str, method: str, history: list[RoundRecord], config: DSSConfig, initial: float,
) -> BeadString:  # fmt: skip
    """Assemble the result; connected only when no budget gave out and every certified segment maximum is <= L0."""
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
        initial_segment_max=initial,
        strategy=space.strategy,
    )
