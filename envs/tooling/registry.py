"""One registry for everything found by name: tasks, optimizers, learned rules, estimators, objectives, path finders.

An entry is a class or a factory, the dataclass of its options (its ``Config``) when it has one, and flags (what the
code that calls it needs to know, e.g. that an objective scores held-out batches). Every registry refuses a name
taken by another entry, lists its names, turns a mapping of options into the entry's ``Config`` (naming the valid
options when one is unknown) and describes an entry's options for ``--help`` and error messages.

>>> OBJECTIVES = Registry("objective")
>>> OBJECTIVES.register("loss", loss_objective, held_out=False)
>>> OBJECTIVES.get("loss"), OBJECTIVES.flag("loss", "held_out")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from envs.errors import InvalidValue

__all__ = ["Choice", "Entry", "Registry"]

T = TypeVar("T")
C = TypeVar("C")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered thing: ``target`` (a class or a factory), the dataclass of its options, and flags."""

    name: str
    target: T
    config: type | None = None
    flags: dict[str, Any] = field(default_factory=dict)


@dataclass
class Choice:
    """A registered entry chosen by name with its options: the ``{name, options}`` shape configs select things by.

    ``options`` are the fields of the entry's ``Config``, checked against it where the config is. A subclass names
    its registry (``"module:attribute"``) so that ``--help`` can list the options of the entry a command line picks;
    a config may still give the bare name (``rule: tiny``), read as ``{name: tiny}``.
    """

    name: str = ""
    """Registered name."""
    options: dict[str, Any] = field(default_factory=dict)
    """The entry's options (the fields of its Config dataclass)."""

    registry: ClassVar[str] = ""
    """Where the registry lives, ``"module:attribute"`` (imported only for ``--help`` and :meth:`config_as`)."""

    def config_as(self, kind: type[C]) -> C:
        """The chosen entry's options as its ``Config`` (``kind``: the dataclass it was registered with).

        Raises:
            TypeError: the entry's options are another dataclass (code reading another entry's options).
        """
        from envs.lazy import resolve

        own = resolve(self.registry).config(self.name, self.options)
        if not isinstance(own, kind):
            raise TypeError(f"{self.name!r} has options {type(own).__name__}, not {kind.__name__}")
        return own


class Registry(Generic[T]):
    """Entries by name.

    Args:
        kind: what the entries are, for messages (``"rule"``, ``"path finder"``).
        base: when given, every entry must be a subclass of it with a dataclass ``Config`` (rules, estimators).
    """

    def __init__(self, kind: str, base: type | None = None):  # ``type``: an abstract base is the usual case
        self.kind, self.base = kind, base
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, target: T, *, config: type | None = None, **flags: Any) -> None:
        """Make ``target`` the entry called ``name``; its ``Config`` is ``config`` or ``target.Config``.

        Registering the same target (or an equal one) under the same name again changes nothing (a module imported
        twice).

        Raises:
            ValueError: ``name`` is taken by another entry.
            TypeError: ``target`` is not a subclass of ``base``, or its ``Config`` is not a dataclass.
        """
        if self.base is not None and not (isinstance(target, type) and issubclass(target, self.base)):
            raise TypeError(f"{self._a} must be a {self.base.__name__} subclass, got {target!r}")
        options = config if config is not None else getattr(target, "Config", None)
        if (self.base is not None or options is not None) and not dataclasses.is_dataclass(options):
            raise TypeError(f"the options of {self.kind} {name!r} must be a dataclass, got {options!r}")
        taken = self._entries.get(name)
        if taken is not None and taken.target is not target and taken.target != target:
            raise ValueError(f"{self._a} is already registered as {name!r} ({taken.target!r}); pick another name")
        self._entries[name] = Entry(name, target, options if isinstance(options, type) else None, dict(flags))

    @property
    def _a(self) -> str:
        """The kind with its article, for messages (``an optimizer``, ``a rule``)."""
        return f"{'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind}"

    def unregister(self, name: str) -> None:
        """Remove entry ``name`` (a no-op when there is none), for tests and notebooks with throw-away entries."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry[T]:
        """The entry registered as ``name``; a clear error naming the valid ones otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}") from None

    def get(self, name: str) -> T:
        """The class or factory registered as ``name``."""
        return self.entry(name).target

    def flag(self, name: str, key: str, default: Any = False) -> Any:
        """Flag ``key`` of entry ``name`` (``default`` when it was registered without it, or is unknown)."""
        entry = self._entries.get(name)
        return default if entry is None else entry.flags.get(key, default)

    def with_flag(self, key: str) -> list[str]:
        """The names whose flag ``key`` is set, sorted."""
        return [name for name in self.names() if self._entries[name].flags.get(key)]

    def name_of(self, obj: Any) -> str:
        """The name ``obj``'s class is registered under."""
        for name, entry in self._entries.items():
            if type(obj) is entry.target:
                return name
        raise ValueError(
            f"{type(obj).__name__} is not a registered {self.kind}; register it with register_{self.kind}(name, cls)"
        )

    def config(self, name: str, options: Mapping[str, Any] | Any) -> Any:
        """The ``Config`` of entry ``name`` from a mapping of its fields (a config instance is returned as is).

        Raises:
            ValueError: an unknown name, an entry without options, an unknown option (naming the valid ones) or a
                value its config refuses.
        """
        config_cls = self.entry(name).config
        if config_cls is None:
            raise ValueError(f"{self.kind} {name!r} takes no options")
        if isinstance(options, config_cls):
            return options
        valid = [f.name for f in dataclasses.fields(config_cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(
                f"{self.kind} {name!r} has no option {', '.join(unknown)}; its options: {', '.join(valid) or 'none'}"
            )
        for f in dataclasses.fields(config_cls):  # a flag given as "maybe" would otherwise read as true
            if f.type in ("bool", bool) and f.name in options and not isinstance(options[f.name], bool):
                value = options[f.name]
                raise InvalidValue(config_cls, f.name, value, f"must be true or false, got {value!r}")
        return config_cls(**options)

    def describe(self, name: str) -> str:
        """One line per option of entry ``name``: ``key: type = default  help`` (its ``Config`` field docs)."""
        from envs.tooling.config import field_docs

        config_cls = self.entry(name).config
        if config_cls is None:
            return f"{self.kind} {name!r}: no options"
        docs = field_docs(config_cls)
        lines = [f"options of {self.kind} {name!r}:"]
        for f in dataclasses.fields(config_cls):
            if f.default is not dataclasses.MISSING:
                default = repr(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = repr(f.default_factory())
            else:
                default = "required"
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            lines.append(f"  {f.name}: {kind} = {default}" + (f"  {docs[f.name]}" if docs.get(f.name) else ""))
        return "\n".join(lines)
