"""The path-finder seam: the settings every finder receives (``DSSConfig``), its interface and the registry.

A path finder connects pairs of endpoints inside the level set {theta : F(theta) <= L0} of each pair's threshold and
returns one :class:`~geodesics.path.BeadString` per pair. ``DSSConfig.finder`` chooses the finder ``connect`` runs,
``{name, options}``: the name must be registered (:func:`register_finder`), the options are the fields of the
dataclass it was registered with, and everything the finders share (budgets, bead optimizer, checks) sits beside it
in ``DSSConfig``. The built-in finders are registered by the package (``geodesics.finders``): ``greedy`` (DSS paper,
Algorithm 1), ``constrained`` (Appendix A), ``neb`` (AutoNEB) and ``bezier`` / ``polychain`` (Garipov et al.). A new
finder is one module holding a function with the :class:`PathFinder` signature and its options' dataclass, and one
line ``register_finder("name", function, config=Options)``; the function reads its options with
``config.options(Options)``.
A finder registered with ``level_profiles=True`` (greedy and constrained DSS) also takes a level that varies along
the path (:mod:`geodesics.levels`); the others get plain floats, and ``connect`` refuses a varying profile for them.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from torch import Tensor

from envs.errors import InvalidValue
from envs.tooling.config import check_range
from envs.tooling.registry import Choice, Registry
from geodesics.curve import CurveConfig
from geodesics.levels import LevelProfile
from geodesics.path import BeadString
from geodesics.space import ParamSpace

__all__ = [
    "ConstantLevelFinder",
    "DSSConfig",
    "FINDERS",
    "FinderChoice",
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
    """Connects every pair inside its level set; what ``connect_many`` calls for ``DSSConfig.finder``."""

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
            config: the settings (budgets, bead training, segment checks); the finder's own options are
                ``config.options(ItsConfig)``.
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


def register_finder(
    name: str, finder: PathFinder | ConstantLevelFinder, *, config: type | None = None, level_profiles: bool = False
) -> None:
    """Make ``finder`` available as ``DSSConfig(finder=name)`` (``dss.finder.name=NAME`` in a config).

    Args:
        name: the finder's name.
        finder: the function.
        config: the dataclass of its own options (``dss.finder.options``); None for a finder without any.
        level_profiles: whether it takes level profiles that vary along the path (its ``thresholds`` may then hold
            :class:`~geodesics.levels.LevelProfile` objects beside floats).

    Raises:
        ValueError: ``name`` is already taken by another finder.
    """
    # a finder registered without ``level_profiles`` is only ever called with floats: connect_many refuses profiles
    FINDERS.register(name, typing.cast(PathFinder, finder), config=config, level_profiles=level_profiles)


def takes_profiles(name: str) -> bool:
    """Whether the finder registered as ``name`` takes level profiles that vary along the path."""
    return bool(FINDERS.flag(name, "level_profiles"))


def list_finders() -> list[str]:
    """Names of the registered path finders."""
    return FINDERS.names()


def get_finder(name: str) -> PathFinder:
    """The finder registered as ``name``; a clear error naming the valid choices otherwise."""
    if name not in FINDERS:
        raise ValueError(f"finder {_unknown(name)}")
    return FINDERS.get(name)


def _unknown(name: str) -> str:
    return f"must be one of the registered path finders ({', '.join(list_finders())}), got {name!r}"


@dataclass
class FinderChoice(Choice):
    """A path finder by registered name with its own options (the fields of the ``Config`` it was registered with)."""

    registry: ClassVar[str] = "geodesics.finders.base:FINDERS"


LEGACY_KEYS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("accept_factor", "split_chord", "finish", "finish_steps", "restarts", "hyperplane"), ("greedy",)),
    **dict.fromkeys(("spring", "kappa", "stages"), ("constrained",)),
    "neb": ("neb",),
    "trained_curve": ("bezier", "polychain"),
}
"""Keys of the older flat ``DSSConfig`` that are a finder's own options now, with the finders that read them;
``neb`` and ``trained_curve`` held a nested mapping of options."""

C = TypeVar("C")


@dataclass
class DSSConfig:
    """Settings of ``connect``: the path finder with its own options, the shared budgets, bead training and checks."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "method": "finder.name", "neb": "finder.options", "trained_curve": "finder.options",
        **{key: f"finder.options.{key}" for key in LEGACY_KEYS if key not in ("neb", "trained_curve")},
    }  # fmt: skip
    """Keys of the older flat shape on the command line (``dss.method=neb``), read at their new place."""

    finder: FinderChoice = field(default_factory=lambda: FinderChoice("greedy"))
    """The path finder, ``{name, options}``: ``greedy`` (Algorithm 1, breadth-first), ``constrained`` (Appendix A),
    ``neb`` (nudged elastic band, AutoNEB), ``bezier`` or ``polychain`` (curves trained by sampling t, Garipov et
    al.), or any name given to ``geodesics.finders.register_finder``; options are the fields of its Config
    (``--help dss.finder.name=NAME`` lists them)."""
    alpha: float = 0.95
    """New beads (and images, control points) are trained until their loss is at most alpha * L0."""
    t_star: str = "argmax"
    """Greedy and constrained DSS: where a failing segment gets its bead: ``argmax`` of its curve or ``midpoint``."""
    max_rounds: int = 10
    """Rounds of bead insertion at most (NEB: cycles; curves: rounds of ``max_steps`` training steps)."""
    max_beads: int = 256
    """Beads on the string at most, endpoints included."""
    max_steps: int = 2000
    """Training steps per bead at most (constrained: per stage; NEB: iterations per cycle)."""
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

    def __post_init__(self) -> None:
        # a config rebuilt from a saved dict (``BeadString.config``) holds its nested settings as dicts
        if isinstance(self.curve, dict):
            self.curve = CurveConfig(**self.curve)
        if isinstance(self.finder, str):
            self.finder = FinderChoice(self.finder)
        elif isinstance(self.finder, dict):
            self.finder = FinderChoice(**self.finder)
        if self.finder.name not in FINDERS:
            raise InvalidValue(type(self), "finder.name", self.finder.name, _unknown(self.finder.name))
        try:
            own = finder_config(self.finder.name, self.finder.options)
        except InvalidValue as exc:  # name the option by its full key
            raise InvalidValue(type(self), f"finder.options.{exc.key}", exc.value, exc.message) from None
        except ValueError as exc:  # an unknown option
            raise InvalidValue(type(self), "finder.options", dict(self.finder.options), str(exc)) from None
        if own is not None:  # spelled out: a saved config says every option the finder ran with
            self.finder.options = {f.name: getattr(own, f.name) for f in dataclasses.fields(own)}
        if self.t_star not in ("argmax", "midpoint"):
            raise ValueError(f"t_star must be argmax or midpoint, got {self.t_star!r}")
        check_range(self, "alpha", low=0, high=1, low_open=True)
        check_range(self, "max_rounds", low=0, integer=True)
        check_range(self, "max_beads", low=2, integer=True)
        check_range(self, "max_steps", low=1, integer=True)
        check_range(self, "check_every", low=1, integer=True)
        check_range(self, "seed", low=0, integer=True)
        check_range(self, "max_seconds", low=0)
        check_range(self, "max_evaluations", low=0, integer=True)
        check_range(self, "lr", low=0)
        check_range(self, "bead_noise", low=0)

    def options(self, kind: type[C]) -> C:
        """The chosen finder's options as its ``Config`` (``kind``: the class it was registered with).

        Raises:
            TypeError: the chosen finder's options are not a ``kind`` (a finder reading another finder's options).
        """
        own = finder_config(self.finder.name, self.finder.options)
        if not isinstance(own, kind):
            raise TypeError(f"path finder {self.finder.name!r} has options {type(own).__name__}, not {kind.__name__}")
        return own

    @classmethod
    def using(cls, finder: str = "greedy", **settings: Any) -> DSSConfig:
        """Settings for the finder named ``finder``, its own options and the shared settings as keyword arguments.

        Arguments that are fields of ``DSSConfig`` are the shared settings, the others the finder's own options:
        ``DSSConfig.using("neb", climb=False, max_rounds=3)``.
        """
        shared = {f.name for f in dataclasses.fields(cls)}
        own = {key: value for key, value in settings.items() if key not in shared}
        return cls(finder=FinderChoice(finder, own), **{k: v for k, v in settings.items() if k in shared})

    def with_options(self, **options: Any) -> DSSConfig:
        """A copy whose finder's own options are updated by ``options`` (``config.with_options(finish="lbfgs")``)."""
        return dataclasses.replace(self, finder=FinderChoice(self.finder.name, {**self.finder.options, **options}))

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> DSSConfig:
        """Settings saved as a mapping: a string's ``config``, a target shard's ``dss``.

        Of today's shape or the older flat one (``method``, ``neb``, ``accept_factor``, ...).
        """
        upgraded = dict(settings)
        upgrade_flat(upgraded, "", {})
        return cls(**upgraded)

    @staticmethod
    def upgrade_node(node: MutableMapping[str, Any], prefix: str, notes: dict[str, str]) -> None:
        """Read a mapping of the older flat shape as today's (see :func:`upgrade_flat`); for config files."""
        upgrade_flat(node, prefix, notes)


def finder_config(name: str, options: Mapping[str, Any]) -> Any:
    """The ``Config`` of finder ``name`` from its options (None for a finder registered without options).

    Raises:
        ValueError: unknown options, or options for a finder that takes none.
    """
    if FINDERS.entry(name).config is None:
        if options:
            raise ValueError(f"path finder {name!r} takes no options, got {', '.join(options)}")
        return None
    return FINDERS.config(name, options)


def upgrade_flat(node: MutableMapping[str, Any], prefix: str, notes: dict[str, str]) -> None:
    """Move the keys of the older flat ``DSSConfig`` shape into ``finder: {name, options}``, in place.

    ``method`` becomes ``finder.name``; a key of :data:`LEGACY_KEYS` becomes one of ``finder.options`` when the
    chosen finder reads it (or no finder is named in ``node``), and is dropped otherwise (that finder never read it,
    as before). ``notes`` gains ``old -> new`` for the deprecation line.
    """
    if "method" not in node and not any(key in node for key in LEGACY_KEYS):
        return
    finder = node.pop("finder", None)
    finder = {} if finder is None else {k: finder[k] for k in finder}
    if "method" in node:
        finder["name"] = node.pop("method")
        notes[f"{prefix}method"] = f"{prefix}finder.name"
    name = finder.get("name")
    options = {k: v for k, v in (finder.get("options") or {}).items()}
    for key, readers in LEGACY_KEYS.items():
        if key not in node:
            continue
        value = node.pop(key)
        if name is not None and name not in readers:
            notes[f"{prefix}{key}"] = f"dropped (read by {' and '.join(readers)} only)"
        elif key in ("neb", "trained_curve"):
            options.update({k: value[k] for k in value})
            notes[f"{prefix}{key}"] = f"{prefix}finder.options"
        else:
            options[key] = value
            notes[f"{prefix}{key}"] = f"{prefix}finder.options.{key}"
    finder["options"] = options
    node["finder"] = finder
