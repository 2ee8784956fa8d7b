"""Settings of the finders beside DSS, nested in ``DSSConfig`` (``dss.neb.*``, ``dss.trained_curve.*``).

Everything the finders share stays in :class:`~geodesics.finders.base.DSSConfig`: the level target ``alpha``, the
round, point, step, time and evaluation budgets, the optimizer and learning rate, ``check_every``, the jitter and
the segment checks. What is specific to one family of finders lives here: NEB (:mod:`geodesics.finders.neb`) and
the curves trained by sampling t (:mod:`geodesics.finders.curves`).
"""

from __future__ import annotations

from dataclasses import dataclass

from envs.tooling.config import check_range

__all__ = ["NEBConfig", "TrainedCurveConfig"]


@dataclass
class NEBConfig:
    """Nudged elastic band (``method=neb``): a cycle is ``max_steps`` NEB iterations, then images are inserted."""

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
    """Curves trained by sampling t (``method=bezier`` or ``polychain``, Garipov et al. 2018)."""

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
