"""The path-finder seam: the settings every finder receives (``DSSConfig``), its interface and the registry.

A path finder connects pairs of endpoints inside the level set {theta : F(theta) <= L0} of each pair's threshold and
returns one :class:`~geodesics.path.BeadString` per pair. ``DSSConfig.method`` names the finder ``connect`` runs; the
name must be registered (:func:`register_finder`). The built-in finders are registered by the package
(``geodesics.finders``): ``greedy`` (DSS paper, Algorithm 1), ``constrained`` (Appendix A), ``neb`` (AutoNEB) and
``bezier`` / ``polychain`` (Garipov et al.). A new finder is one
module holding a function with the :class:`PathFinder` signature, and one line ``register_finder("name", function)``.
A finder registered with ``level_profiles=True`` (greedy and constrained DSS) also takes a level that varies along
the path (:mod:`geodesics.levels`); the others get plain floats, and ``connect`` refuses a varying profile for them.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor

from envs.errors import InvalidValue
from envs.tooling.config import check_range
from envs.tooling.registry import Registry
from geodesics.beads import FINISHES
from geodesics.curve import CurveConfig
from geodesics.finders.settings import NEBConfig, TrainedCurveConfig
from geodesics.levels import LevelProfile
from geodesics.path import BeadString
from geodesics.space import ParamSpace

__all__ = [
    "ConstantLevelFinder",
    "DSSConfig",
    "FINDERS",
    "Pair",
    "PathFinder",
    "get_finder",
    "list_finders",
    "register_finder",
    "takes_profiles",
]

Pair = tuple[Tensor, Tensor]
"""Two endpoints ``(a (P,), b (P,))``."""


class PathFinder(Protocol):
    """Connects every pair inside its level set; what ``connect_many`` calls for ``DSSConfig.method``."""

    def __call__(
        self,
        space: ParamSpace,
        pairs: Sequence[Pair],
        thresholds: Sequence[float | LevelProfile],
        endpoint_losses: Tensor,
        keys: Sequence[int],
        config: DSSConfig,
    ) -> list[BeadString]:
        """One string per pair, in order, from ``a`` to ``b``.

        Args:
            space: the parameter space of the task.
            pairs: the endpoints, checked: on the space's device and dtype, each endpoint's evaluation loss at most
                its pair's threshold. A string must hold them bit-identical as ``beads[0]`` and ``beads[-1]``.
            thresholds: the level L0 of each pair; for a finder registered with ``level_profiles=True``, a
                :class:`~geodesics.levels.LevelProfile` where the pair's level varies along the path.
            endpoint_losses: evaluation losses of the endpoints ``(N, 2)`` in float64.
            keys: the random stream of each pair (``envs.seeding.generator(config.seed, ..., key)``), so a pair's
                result does not depend on the pairs beside it.
            config: the settings (budgets, bead training, segment checks, finder options).
        """
        ...


class ConstantLevelFinder(Protocol):
    """A :class:`PathFinder` that certifies against a constant level only: its ``thresholds`` are plain floats."""

    def __call__(
        self,
        space: ParamSpace,
        pairs: Sequence[Pair],
        thresholds: Sequence[float],
        endpoint_losses: Tensor,
        keys: Sequence[int],
        config: DSSConfig,
    ) -> list[BeadString]:
        """One string per pair, as :meth:`PathFinder.__call__`, every level a float."""
        ...


FINDERS: Registry[PathFinder] = Registry("path finder")
"""The registered path finders, flag ``level_profiles``."""


def register_finder(name: str, finder: PathFinder | ConstantLevelFinder, *, level_profiles: bool = False) -> None:
    """Make ``finder`` available as ``DSSConfig(method=name)``.

    Args:
        name: the method name.
        finder: the function.
        level_profiles: whether it takes level profiles that vary along the path (its ``thresholds`` may then hold
            :class:`~geodesics.levels.LevelProfile` objects beside floats).

    Raises:
        ValueError: ``name`` is already taken by another finder.
    """
    # a finder registered without ``level_profiles`` is only ever called with floats: connect_many refuses profiles
    FINDERS.register(name, typing.cast(PathFinder, finder), level_profiles=level_profiles)


def takes_profiles(name: str) -> bool:
    """Whether the finder registered as ``name`` takes level profiles that vary along the path."""
    return bool(FINDERS.flag(name, "level_profiles"))


def list_finders() -> list[str]:
    """Names of the registered path finders."""
    return FINDERS.names()


def get_finder(name: str) -> PathFinder:
    """The finder registered as ``name``; a clear error naming the valid choices otherwise."""
    if name not in FINDERS:
        raise ValueError(_unknown(name))
    return FINDERS.get(name)


def _unknown(name: str) -> str:
    return f"method must be one of the registered path finders ({', '.join(list_finders())}), got {name!r}"


@dataclass
class DSSConfig:
    """Settings of ``connect``: which path finder, its budgets, bead training and segment checks."""

    method: str = "greedy"
    """Path finder by registered name: ``greedy`` (Algorithm 1, breadth-first), ``constrained`` (Appendix A),
    ``neb`` (nudged elastic band, AutoNEB), ``bezier`` or ``polychain`` (curves trained by sampling t, Garipov et
    al.), or any name given to ``geodesics.finders.register_finder``."""
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
    max_evaluations: int = 0
    """Budget of loss evaluations, one per model on a batch or on the evaluation set, gradients included
    (``ParamSpace.evaluations``; 0: none). Checked where the time budget is: between rounds in DSS (greedy DSS has
    one budget for all the pairs of a ``connect_many`` call, which train as one batch; the other finders one per
    pair), before every step in NEB and the trained curves."""
    optimizer: str = "adam"
    """Bead optimizer: a registered optimizer with a batched twin (``adam``, ``sgd``, ``momentum``, ...)."""
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
    accept_factor: float = 1.0
    """Greedy only: a segment passes when its checked maximum is at most accept_factor * L0 (the public reference
    code accepts at 1.1 L0; the bead target stays alpha * L0). Above 1 a connected string may exceed L0."""
    split_chord: bool = False
    """Greedy only: the first round puts a bead on the straight segment even when it passes (the reference code's
    recursion trains its first midpoint before it checks anything, so its bead count always includes it)."""
    finish: str = "none"
    """Greedy only: what becomes of a bead still above its target after ``max_steps``: ``none`` (it misses its
    target and the string fails) or ``lbfgs`` (up to ``finish_steps`` iterations of L-BFGS with a strong-Wolfe line
    search, one bead at a time on one training batch, checked every ``check_every`` iterations; for small full-batch
    tasks such as the paper's regressions, where Adam at a fixed rate stalls above targets near the minimum)."""
    finish_steps: int = 2000
    """Greedy only: L-BFGS iterations at most per bead when ``finish`` is ``lbfgs`` (at least 1)."""
    restarts: int = 0
    """Greedy only: a bead still above its target after ``max_steps`` (and the finish) trains again from where it
    stopped with fresh optimizer state, up to this many times, before the string fails on it."""
    hyperplane: bool = False
    """Greedy only: a new bead moves only in the hyperplane through its starting point orthogonal to its segment
    (each gradient and each update projected onto it, the L-BFGS finish's too), so it keeps its place t* along the
    segment and cannot slide past its neighbours; the hard form of constrained DSS's kappa term, and NEB's
    perpendicular force. For the low levels, where free beads overshoot their segments' ends."""
    spring: float = 0.0
    """Constrained only: C, weight of the spring term sum of distances to the neighbours."""
    kappa: float = 1.0
    """Constrained only: weight of the distance to the bisecting hyperplane of the neighbours."""
    stages: int = 4
    """Constrained only: number of target levels from the initial peak down to L0."""
    neb: NEBConfig = field(default_factory=NEBConfig)
    """NEB only: images, climbing image, spacing (``max_rounds`` counts its cycles, ``max_steps`` the iterations of
    one, ``max_beads`` its images with the endpoints)."""
    trained_curve: TrainedCurveConfig = field(default_factory=TrainedCurveConfig)
    """Bezier and polychain only: control points, t samples per step, polyline resolution (``max_rounds`` counts
    rounds of ``max_steps`` training steps, each ended by the certification)."""

    def __post_init__(self) -> None:
        # a config rebuilt from a saved dict (``BeadString.config``) holds its nested settings as dicts
        if isinstance(self.curve, dict):
            self.curve = CurveConfig(**self.curve)
        if isinstance(self.neb, dict):
            self.neb = NEBConfig(**self.neb)
        if isinstance(self.trained_curve, dict):
            self.trained_curve = TrainedCurveConfig(**self.trained_curve)
        if self.method not in FINDERS:
            raise ValueError(_unknown(self.method))
        if self.t_star not in ("argmax", "midpoint"):
            raise ValueError(f"t_star must be argmax or midpoint, got {self.t_star!r}")
        check_range(self, "alpha", low=0, high=1, low_open=True)
        check_range(self, "max_rounds", low=0, integer=True)
        check_range(self, "max_beads", low=2, integer=True)
        check_range(self, "max_steps", low=1, integer=True)
        check_range(self, "stages", low=1, integer=True)
        check_range(self, "check_every", low=1, integer=True)
        check_range(self, "seed", low=0, integer=True)
        check_range(self, "max_seconds", low=0)
        check_range(self, "max_evaluations", low=0, integer=True)
        check_range(self, "lr", low=0)
        check_range(self, "bead_noise", low=0)
        check_range(self, "spring", low=0)
        check_range(self, "kappa", low=0)
        check_range(self, "accept_factor", low=1)
        if self.finish not in FINISHES:
            message = f"must be one of {', '.join(FINISHES)}, got {self.finish!r}"
            raise InvalidValue(type(self), "finish", self.finish, message)
        check_range(self, "finish_steps", low=1, integer=True)
        check_range(self, "restarts", low=0, integer=True)
        greedy_only = {"accept_factor": 1.0, "split_chord": False, "finish": "none", "restarts": 0, "hyperplane": False}
        for key, default in greedy_only.items():
            if self.method != "greedy" and getattr(self, key) != default:
                raise InvalidValue(
                    type(self), key, getattr(self, key), f"is read by greedy DSS only; method is {self.method!r}"
                )
