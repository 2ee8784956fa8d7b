"""The options of each built-in path finder: what ``dss.finder.options`` holds for the finder ``dss.finder.name``.

Everything the finders share stays in :class:`~geodesics.finders.base.DSSConfig`: the level target ``alpha``, the
round, point, step, time and evaluation budgets, the optimizer and learning rate, ``check_every``, the jitter and
the segment checks. What only one finder reads is its ``Config`` here, registered with it: greedy DSS
(:mod:`geodesics.finders.greedy`), constrained DSS (:mod:`geodesics.finders.constrained`), NEB
(:mod:`geodesics.finders.neb`) and the curves trained by sampling t (:mod:`geodesics.finders.curves`), e.g.

    dss:
      finder: {name: greedy, options: {finish: lbfgs, restarts: 2}}
"""

from __future__ import annotations

from dataclasses import dataclass

from envs.errors import InvalidValue
from envs.tooling.config import check_range
from geodesics.beads import FINISHES, BeadSchedule

__all__ = ["ConstrainedConfig", "GreedyConfig", "NEBConfig", "TrainedCurveConfig"]


@dataclass
class GreedyConfig:
    """Greedy DSS (``finder.name=greedy``, the paper's Algorithm 1): acceptance, first split and bead finishing."""

    accept_factor: float = 1.0
    """A segment passes when its checked maximum is at most accept_factor * L0 (the public reference code accepts at
    1.1 L0; the bead target stays alpha * L0). Above 1 a connected string may exceed L0."""
    split_chord: bool = False
    """The first round puts a bead on the straight segment even when it passes (the reference code's recursion
    trains its first midpoint before it checks anything, so its bead count always includes it)."""
    finish: str = "none"
    """What becomes of a bead still above its target after ``max_steps``: ``none`` (it misses its target and the
    string fails) or ``lbfgs`` (up to ``finish_steps`` iterations of L-BFGS with a strong-Wolfe line search, one bead
    at a time on one training batch, checked every ``check_every`` iterations; for small full-batch tasks such as
    the paper's regressions, where Adam at a fixed rate stalls above targets near the minimum)."""
    finish_steps: int = 2000
    """L-BFGS iterations at most per bead when ``finish`` is ``lbfgs`` (at least 1)."""
    restarts: int = 0
    """A bead still above its target after ``max_steps`` (and the finish) trains again from where it stopped with
    fresh optimizer state, up to this many times, before the string fails on it."""
    hyperplane: bool = False
    """A new bead moves only in the hyperplane through its starting point orthogonal to its segment (each gradient
    and each update projected onto it, the L-BFGS finish's too), so it keeps its place t* along the segment and
    cannot slide past its neighbours; the hard form of constrained DSS's kappa term, and NEB's perpendicular force.
    For the low levels, where free beads overshoot their segments' ends."""

    def __post_init__(self) -> None:
        check_range(self, "accept_factor", low=1)
        if self.finish not in FINISHES:
            raise InvalidValue(
                type(self), "finish", self.finish, f"must be one of {', '.join(FINISHES)}, got {self.finish!r}"
            )
        check_range(self, "finish_steps", low=1, integer=True)
        check_range(self, "restarts", low=0, integer=True)

    def schedule(self, max_steps: int, lr: float, optimizer: str, check_every: int) -> BeadSchedule:
        """The bead trainer's settings: the shared first-order phase (from ``DSSConfig``) and this finder's finish."""
        return BeadSchedule(max_steps=max_steps, lr=lr, optimizer=optimizer, check_every=check_every,
                            finish=self.finish, finish_steps=self.finish_steps, restarts=self.restarts)  # fmt: skip


@dataclass
class ConstrainedConfig:
    """Constrained DSS (``finder.name=constrained``, the paper's Appendix A): the penalty and its stages."""

    spring: float = 0.0
    """C, weight of the spring term sum of distances to the neighbours."""
    kappa: float = 1.0
    """Weight of the distance to the bisecting hyperplane of the neighbours."""
    stages: int = 4
    """Number of target levels from the initial peak down to L0."""

    def __post_init__(self) -> None:
        check_range(self, "spring", low=0)
        check_range(self, "kappa", low=0)
        check_range(self, "stages", low=1, integer=True)


@dataclass
class NEBConfig:
    """Nudged elastic band (``finder.name=neb``): a cycle is ``max_steps`` NEB iterations, then images are inserted.

    The shared ``max_rounds`` counts its cycles and ``max_beads`` its images with the endpoints.
    """

    initial_images: int = 3
    """Images put evenly on the chord before the first cycle (AutoNEB's first, ``equal`` insertion)."""
    insert_per_cycle: int = 2
    """Images inserted after a cycle, one into each of the failing segments with the highest certified maximum."""
    climb: bool = True
    """Climbing image: the highest interior image climbs along the tangent to the saddle instead of descending."""
    climb_after: int = 50
    """NEB iterations of a cycle before its climbing image is switched on."""
    redistribute: bool = True
    """Keep the images evenly spaced by arc length after every step (the reference's infinite spring constant);
    false uses a finite spring force of constant ``spring`` along the tangent instead."""
    spring: float = 1.0
    """Spring constant when ``redistribute`` is false."""

    def __post_init__(self) -> None:
        check_range(self, "initial_images", low=0, integer=True)
        check_range(self, "insert_per_cycle", low=1, integer=True)
        check_range(self, "climb_after", low=0, integer=True)
        check_range(self, "spring", low=0)


@dataclass
class TrainedCurveConfig:
    """Curves trained by sampling t (``finder.name=bezier`` or ``polychain``, Garipov et al. 2018).

    The shared ``max_rounds`` counts rounds of ``max_steps`` training steps, each ended by the certification.
    """

    bends: int = 1
    """Trainable control points between the endpoints (1: the quadratic Bezier / the one-bend chain of the paper)."""
    samples: int = 8
    """Values of t per training step, stratified over [0, 1] and evaluated in one batched call."""
    points: int = 17
    """Bezier only: vertices of the polyline (endpoints included) on which the curve is certified and measured."""
    lr: float = 0.0
    """Learning rate of the control points (0: ``dss.lr``, or the task's recipe rate). A chain's single bend can
    wander at the recipe rate of a minibatch task (on digits_mlp 0.001 connects where 0.01 diverges)."""

    def __post_init__(self) -> None:
        check_range(self, "bends", low=1, integer=True)
        check_range(self, "samples", low=1, integer=True)
        check_range(self, "points", low=3, integer=True)
        check_range(self, "lr", low=0)
