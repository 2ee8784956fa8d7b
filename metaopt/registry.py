"""Classes by name, each with a ``Config`` dataclass of its options: the one registry behind rules and estimators.

``metaopt train rule=NAME rule_options={...}`` and ``estimator=NAME estimator_options={...}`` resolve through a
:class:`Registry`, and so do checkpoints (a rule's registered name is saved with it). Every lookup that fails says
which names or options exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Subclasses of ``base`` by name.

    Args:
        kind: what the entries are, for messages (``"rule"``, ``"estimator"``).
        base: the class every entry must subclass.
    """

    def __init__(self, kind: str, base: type):  # ``type``, not ``type[T]``: an abstract base is the usual case
        self.kind, self.base = kind, base
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str, cls: type[T]) -> None:
        """Make ``cls`` the entry called ``name`` (``cls.Config`` must be a dataclass)."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"register_{self.kind} needs a {self.base.__name__} subclass, got {cls!r}")
        if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
            raise TypeError(f"{cls.__name__}.Config must be a dataclass of the {self.kind}'s options")
        self._classes[name] = cls

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; a clear error naming the valid ones otherwise."""
        try:
            return self._classes[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}") from None

    def name_of(self, obj: T) -> str:
        """The name ``obj``'s class is registered under."""
        for name, cls in self._classes.items():
            if type(obj) is cls:
                return name
        raise ValueError(
            f"{type(obj).__name__} is not a registered {self.kind}; register it with register_{self.kind}(name, cls)"
        )

    def config(self, name: str, options: Mapping[str, Any] | Any) -> Any:
        """The ``Config`` of entry ``name`` from a mapping of its fields (a config instance is returned as is).

        Raises:
            ValueError: an unknown name, an unknown option (naming the valid ones) or a value its config refuses.
        """
        config_cls = self.get(name).Config  # type: ignore[attr-defined]
        if isinstance(options, config_cls):
            return options
        valid = [f.name for f in dataclasses.fields(config_cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(
                f"{self.kind} {name!r} has no option {', '.join(unknown)}; its options: {', '.join(valid) or 'none'}"
            )
        return config_cls(**options)
