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
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from envs.seeding import generator
from geodesics.beads import train_beads
from geodesics.curve import CurveConfig, SegmentMax, segment_maxima
from geodesics.space import ParamSpace
from geodesics.string import BeadString, RoundRecord

__all__ = ["DSSConfig", "connect"]


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


class _Budget:
    """Wall-time bookkeeping shared by both methods."""

    def __init__(self, max_seconds: float):
        self.start = time.perf_counter()
        self.max_seconds = max_seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def expired(self) -> bool:
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
    config = config or DSSConfig()
    a, b = space.check(a), space.check(b)
    endpoint_losses = space.batched_eval_loss(torch.stack([a, b])).to(torch.float64)
    for name, loss in zip("ab", endpoint_losses.tolist()):
        if loss > threshold:
            raise ValueError(
                f"endpoint {name} has evaluation loss {loss:.6g} above the threshold L0 = {threshold:.6g}: DSS "
                "connects points inside the level set. Train it below L0 first (geodesics.train_to_threshold) or "
                "raise L0."
            )
    if config.method == "constrained":
        from geodesics.constrained import connect_constrained

        return connect_constrained(space, a, b, threshold, config, endpoint_losses)
    return _connect_greedy(space, a, b, threshold, config, endpoint_losses)


def _connect_greedy(
    space: ParamSpace, a: Tensor, b: Tensor, threshold: float, config: DSSConfig, endpoint_losses: Tensor
) -> BeadString:
    budget = _Budget(config.max_seconds)
    beads = [a, b]
    losses = endpoint_losses.tolist()
    checks: list[SegmentMax] = segment_maxima(space, a.unsqueeze(0), b.unsqueeze(0), config.curve)
    initial = checks[0].upper
    history = [_record(0, beads, 0, checks, threshold, 0, budget, config)]
    lr = config.lr or space.task.recipe.lr
    jitter = generator(config.seed, "bead-noise")
    reason = ""
    for round_ in range(1, config.max_rounds + 1):
        failing = [i for i, c in enumerate(checks) if c.upper > threshold]
        if not failing:
            break
        if budget.expired:
            reason = f"time: the {config.max_seconds:g} s budget ran out after {round_ - 1} rounds"
            break
        if len(beads) + len(failing) > config.max_beads:
            reason = (
                f"beads: {len(failing)} more beads would exceed max_beads={config.max_beads} "
                f"({len(beads)} on the string)"
            )
            break
        inits = torch.stack([_new_bead(beads[i], beads[i + 1], checks[i], config, jitter) for i in failing])
        targets = torch.full((len(failing),), config.alpha * threshold, dtype=torch.float64)
        trained = train_beads(space, inits, targets, max_steps=config.max_steps, lr=lr, optimizer=config.optimizer,
                              check_every=config.check_every, seed=config.seed * 1000 + round_)  # fmt: skip
        # insert from the right so earlier indices stay valid; remember where each new bead lands
        for row, i in sorted(enumerate(failing), key=lambda pair: -pair[1]):
            beads.insert(i + 1, trained.beads[row])
            losses.insert(i + 1, float(trained.losses[row]))
        positions = [i + 1 + rank for rank, i in enumerate(failing)]
        if not bool(trained.reached.all()):
            row = int((~trained.reached).nonzero()[0])
            reason = (
                f"bead {positions[row]} could not reach its target alpha*L0 = {config.alpha * threshold:.6g} within "
                f"max_steps={config.max_steps} (its loss: {float(trained.losses[row]):.6g})"
            )
        checks = _recheck(space, beads, checks, failing, config.curve)
        history.append(
            _record(round_, beads, len(failing), checks, threshold, int(trained.steps.max()), budget, config)
        )
        if reason:
            break
    else:
        if any(c.upper > threshold for c in checks):
            remaining = sum(c.upper > threshold for c in checks)
            reason = f"rounds: max_rounds={config.max_rounds} used and {remaining} segments are still above L0"
    return _finish(space, beads, losses, checks, threshold, reason, "greedy", history, config, initial)


def _new_bead(left: Tensor, right: Tensor, check: SegmentMax, config: DSSConfig, jitter: torch.Generator) -> Tensor:
    t = 0.5 if config.t_star == "midpoint" else min(max(check.t, 0.01), 0.99)
    bead = torch.lerp(left, right, t)
    if config.bead_noise > 0:
        scale = config.bead_noise * float((right - left).norm()) / max(1.0, bead.numel()) ** 0.5
        noise = torch.randn(bead.shape, generator=jitter, dtype=torch.float64).to(bead.device, bead.dtype)
        bead = bead + scale * noise
    return bead


def _recheck(
    space: ParamSpace, beads: list[Tensor], old: list[SegmentMax], failing: list[int], curve: CurveConfig
) -> list[SegmentMax]:
    """Checks of the new string's segments: both halves of every split segment are new, the others are kept."""
    split = set(failing)
    checks: list[SegmentMax | None] = []
    for i, check in enumerate(old):
        checks += [None, None] if i in split else [check]
    todo = [j for j, c in enumerate(checks) if c is None]  # segment j joins beads[j] and beads[j + 1]
    results = segment_maxima(
        space, torch.stack([beads[j] for j in todo]), torch.stack([beads[j + 1] for j in todo]), curve
    )
    for j, result in zip(todo, results):
        checks[j] = result
    return [c for c in checks if c is not None]


def _record(
    round_: int, beads: list[Tensor], new: int, checks: list[SegmentMax], threshold: float, steps: int,
    budget: _Budget, config: DSSConfig,
) -> RoundRecord:  # fmt: skip
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


def _finish(
    space: ParamSpace, beads: list[Tensor], losses: list[float], checks: list[SegmentMax], threshold: float,
    reason: str, method: str, history: list[RoundRecord], config: DSSConfig, initial: float,
) -> BeadString:  # fmt: skip
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
    )
