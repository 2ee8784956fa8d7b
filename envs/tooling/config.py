"""One loader for every command: a typed schema (dataclass), a YAML file and ``key=value`` overrides.

``load_config(Schema, "configs/x.yaml", ["a.b=3"])`` merges the three with OmegaConf (``structured``, ``merge``,
``from_dotlist``) and returns a ``Schema`` instance: library code receives typed objects, never a ``DictConfig``.
Unknown keys and wrong types become one :class:`~envs.errors.ConfigError` naming the key and the valid choices.
Field help comes from the attribute docstrings of the schema (one line under each field), which is also what
``--help`` prints.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import math
import os
import sys
import textwrap
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from envs.errors import ConfigError, InvalidValue

__all__ = [
    "PACKAGED_CONFIGS",
    "RunOptions",
    "TaskConfig",
    "check_range",
    "config_help",
    "field_docs",
    "find_config",
    "load_config",
    "to_yaml",
]

T = TypeVar("T")


@dataclass
class TaskConfig:
    """Which task, with which options."""

    name: str = "quadratic"
    """Task name; one of ``envs.list_tasks()``."""
    options: dict[str, Any] = field(default_factory=dict)
    """Task options (see the task's ``Options`` dataclass), e.g. ``{width: 40}``."""


def check_range(
    owner: Any,
    key: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    optional: bool = False,
) -> None:
    """Check that ``owner.key`` (a number, or each number of a list) is finite and in the range; else raise.

    Call from a schema's ``__post_init__``: the error names the key (``load_config`` makes it a dotted path such as
    ``dss.alpha``) and the valid range, e.g. ``threshold must be a finite number in (0, inf), got nan``.

    Raises:
        InvalidValue: a non-finite value, or one outside ``[low, high]`` (``(`` / ``)`` where open).
    """
    value = getattr(owner, key)
    if value is None and optional:
        return
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    kind = "an integer" if integer else "a finite number"
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    span = f"{left}{'-inf' if low is None else _short(low)}, {'inf' if high is None else _short(high)}{right}"
    if isinstance(value, (list, tuple)):
        kind = f"a non-empty list of {'integers' if integer else 'finite numbers'}"
    for item in values:
        ok = isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)
        ok = ok and (not integer or float(item).is_integer())
        if ok and low is not None:
            ok = item > low if low_open else item >= low
        if ok and high is not None:
            ok = item < high if high_open else item <= high
        if not ok:
            raise InvalidValue(type(owner), key, value, f"must be {kind} in {span}, got {value!r}")
    if not values:
        raise InvalidValue(type(owner), key, value, f"must be {kind} in {span}, got {value!r}")


def _short(value: float) -> str:
    return f"{value:g}"


@dataclass
class RunOptions:
    """The tail every command's schema inherits: where it runs, on how many threads, and where it writes.

    A command overrides a default by redeclaring the field (``name: str = "sweep"``); the field keeps its place.
    """

    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""
    dtype: str = "float32"
    """float32 or float64."""
    name: str = "run"
    """Prefix of the run directory name."""
    out: str | None = None
    """Run directory; default ``runs/<name>-<time>``. Rerun with the same ``out=`` to resume."""
    imports: list[str] = field(default_factory=list)
    """Python modules imported before the config is checked, so that the tasks, rules, estimators, objectives, path
    finders or optimizers they register can be named in it (looked up on sys.path, then in the working directory)."""
    threads: int = 0
    """Intra-op CPU threads while the command runs. 0: one, the fastest for every bundled task on a shared machine
    (benchmarks/threads.py; figures in docs/results.md); N: N threads, for big models on idle cores."""


PACKAGED_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
"""The shipped ``configs/`` folder (installed beside ``envs`` by the same distribution)."""


def find_config(path: str | Path) -> Path:
    """Resolve a config path: as given if it exists, else relative to the packaged ``configs/`` folder.

    So ``configs/compare/quadratic.yaml`` and ``compare/quadratic.yaml`` work from any directory, also after a
    non-editable install. The packaged folder is found beside this package, never by importing ``configs``: a
    user's own ``configs/`` package in the working directory cannot shadow the shipped one.
    """
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    packaged = PACKAGED_CONFIGS
    for rel in (candidate, *(Path(*candidate.parts[i:]) for i in range(1, len(candidate.parts)))):
        if (packaged / rel).is_file():
            return packaged / rel
    shipped = sorted(str(p.relative_to(packaged)) for p in packaged.rglob("*.yaml"))
    raise ConfigError(f"config file {str(path)!r} not found; shipped configs: {', '.join(shipped)}")


def load_config(
    schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = (), *, quiet: bool = False
) -> T:
    """Merge ``schema`` defaults, the YAML file at ``path`` and ``key=value`` ``overrides``; return a ``schema``.

    Keys of older shapes are read at their new place, with one line on stderr naming them (none when ``quiet``).

    Raises:
        ConfigError: an unknown key, a wrong type, a malformed override or an unreadable file, naming the key and
            the valid keys at that level.
    """
    base = OmegaConf.structured(schema)
    layers: list[DictConfig] = []
    if path is not None:
        resolved = find_config(path)
        try:
            loaded = OmegaConf.load(resolved)
        except Exception as exc:  # yaml errors come in several types
            raise ConfigError(f"cannot read config {resolved}: {exc}") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"config {resolved} must be a mapping of keys to values at the top level")
        layers.append(loaded)
    malformed = [o for o in overrides if "=" not in o]
    if malformed:
        raise ConfigError(f"overrides must look like key=value, got {', '.join(map(repr, malformed))}")
    overrides = _upgrade(schema, layers, overrides, quiet)
    _forget_options_renamed_by_files(schema, [base, *layers])
    if overrides:
        _forget_options_of_renamed([base, *layers], overrides)  # the defaults too: DSSConfig spells its options out
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    _import_modules([str(m) for layer in layers if isinstance(layer.get("imports"), ListConfig) for m in layer.imports])
    try:
        merged = OmegaConf.merge(base, *layers)
        return typing.cast(T, OmegaConf.to_object(merged))
    except OmegaConfBaseException as exc:
        raise ConfigError(_explain(schema, exc)) from None
    except InvalidValue as exc:  # a range check in a schema's __post_init__: name the full key
        key = _dotted_key(schema, typing.cast(DictConfig, merged), exc)
        raise ConfigError(f"bad value for {key}: {key} {exc.message}") from None
    except (TypeError, ValueError) as exc:  # raised by a schema's __post_init__
        raise ConfigError(f"invalid {schema.__name__}: {exc}") from None


def _import_modules(modules: Sequence[str]) -> None:
    """Import the ``imports:`` of a config, so what they register can be named in it (the working directory last).

    Raises:
        ConfigError: a module that cannot be imported, named with the reason.
    """
    if not modules:
        return
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)  # after the installed packages: a module there cannot shadow them
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"bad value for imports: cannot import {module!r} ({exc}); is it in the working directory, installed "
                "or on PYTHONPATH?"
            ) from None


def _choice_fields(schema: type) -> set[str]:
    """The fields of ``schema`` that select a registered entry (typed as a :class:`~envs.tooling.registry.Choice`)."""
    from envs.tooling.registry import Choice

    hints = typing.get_type_hints(schema)
    return {f.name for f in dataclasses.fields(schema) if isinstance(hints.get(f.name), type)
            and issubclass(hints[f.name], Choice)}  # fmt: skip


def _nested_schemas(schema: type) -> dict[str, type]:
    """The fields of ``schema`` holding another config dataclass (not a choice), by name."""
    from envs.tooling.registry import Choice

    hints = typing.get_type_hints(schema)
    kinds = {f.name: hints.get(f.name) for f in dataclasses.fields(schema)}
    return {name: kind for name, kind in kinds.items()
            if isinstance(kind, type) and dataclasses.is_dataclass(kind) and not issubclass(kind, Choice)}  # fmt: skip


def _upgrade(schema: type, layers: list[DictConfig], overrides: Sequence[str], quiet: bool = False) -> list[str]:
    """Read older config shapes as today's: a choice given by its bare name, and keys a schema renamed.

    A choice (``rule: tiny``, ``rule=tiny``) becomes ``{name: tiny}`` (so a rename drops the file's options, see
    :func:`_forget_options_of_renamed`); a key in a schema's ``RENAMED_KEYS`` (``{"net": "rule.options"}``) is moved to
    its new place in the file layers and the overrides, with one line on stderr naming what moved. Nested schemas
    (the stages of the quickstart) are read the same way. Returns the overrides as today's keys.
    """
    notes: dict[str, str] = {}
    for layer in layers:
        _upgrade_node(schema, layer, "", notes)
    upgraded = [_upgrade_override(schema, item, notes) for item in overrides]
    if notes and not quiet:
        moved = ", ".join(f"{old} -> {new}" for old, new in notes.items())
        print(f"deprecated config keys, read as their new names: {moved}", file=sys.stderr)
    return upgraded


def _upgrade_node(schema: type, node: DictConfig, prefix: str, notes: dict[str, str]) -> None:
    """Upgrade one mapping read for ``schema`` in place.

    A schema with a static ``upgrade_node(node, prefix, notes)`` reads older shapes the generic renames cannot (keys
    that move or drop depending on another key); it runs first.
    """
    hook = getattr(schema, "upgrade_node", None)
    if hook is not None:
        hook(node, prefix, notes)
    hints = typing.get_type_hints(schema)
    for name in _choice_fields(schema):
        if name in node and isinstance(node[name], str):
            node[name] = {"name": node[name]}
        choice_hook = getattr(hints[name], "upgrade_node", None)  # a choice with older keys of its own
        if choice_hook is not None and name in node and isinstance(node[name], DictConfig):
            choice_hook(node[name], f"{prefix}{name}.", notes)
    for old, new in getattr(schema, "RENAMED_KEYS", {}).items():
        if old in node:
            value = node.pop(old)
            OmegaConf.update(node, new, value, merge=True, force_add=True)
            notes[prefix + old] = prefix + new
    for name, nested in _nested_schemas(schema).items():
        if name in node and isinstance(node[name], DictConfig):
            _upgrade_node(nested, node[name], f"{prefix}{name}.", notes)


def _upgrade_override(schema: type, item: str, notes: dict[str, str]) -> str:
    key, _, value = item.partition("=")
    parts, owner, prefix = key.split("."), schema, []
    while len(parts) > 1 and parts[0] in _nested_schemas(owner):  # descend to the schema that owns the rest
        owner = _nested_schemas(owner)[parts[0]]
        prefix.append(parts.pop(0))
    rest = ".".join(parts)
    for old, new in getattr(owner, "RENAMED_KEYS", {}).items():
        if rest == old or rest.startswith(old + "."):
            notes[".".join([*prefix, old])] = ".".join([*prefix, new])
            rest = new + rest[len(old) :]
            break
    else:
        if rest in _choice_fields(owner) and not value.lstrip().startswith("{"):
            rest += ".name"
    return ".".join([*prefix, rest]) + "=" + value


def _forget_options_of_renamed(layers: list[DictConfig], overrides: Sequence[str]) -> None:
    """Drop the file's ``X.options`` where an override ``X.name=OTHER`` renames a ``{name, options}`` node.

    They belong to the file's entry, not to OTHER; ``X.options.key=...`` given beside the rename still applies.
    """
    for item in overrides:
        key, _, value = item.partition("=")
        if not key.endswith(".name"):
            continue
        for layer in layers:
            node = OmegaConf.select(layer, key[: -len(".name")])
            named = isinstance(node, DictConfig) and node.get("name") is not None  # unnamed: options of the rename
            if named and "options" in node and str(node.get("name")) != value:
                node.options = {}


def _forget_options_renamed_by_files(schema: type, layers: list[DictConfig], prefix: tuple[str, ...] = ()) -> None:
    """Drop an earlier layer's ``X.options`` where a later one names another entry for ``X``.

    The defaults spell out their entry's options (``objective: {name: loss, options: {log: false}}``); a file that
    chooses ``{name: teacher}`` means the teacher's options, not the loss's merged into them.
    """
    for name in _choice_fields(schema):
        path, current = ".".join([*prefix, name]), None
        for index, layer in enumerate(layers):
            node = OmegaConf.select(layer, path)
            if not isinstance(node, DictConfig) or node.get("name") is None:
                continue
            if current is not None and str(node.get("name")) != current:
                for earlier in layers[:index]:
                    old = OmegaConf.select(earlier, path)
                    if isinstance(old, DictConfig) and "options" in old:
                        old.options = {}
            current = str(node.get("name"))
    for name, nested in _nested_schemas(schema).items():
        _forget_options_renamed_by_files(nested, layers, (*prefix, name))


def _explain(schema: type, exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or ""
    message = getattr(exc, "msg", None) or str(exc)
    owner = _schema_at(schema, key.split(".")[:-1]) if key else schema
    valid = ", ".join(f.name for f in dataclasses.fields(owner)) if owner is not None else ""
    where = f" at {key!r}" if key else ""
    hint = f"; valid keys here: {valid}" if valid else ""
    return f"bad config{where}: {message.splitlines()[0]}{hint}. See --help for every option."


def _schema_at(schema: type, path: list[str]) -> type | None:
    current: type | None = schema
    for part in path:
        if current is None or not dataclasses.is_dataclass(current):
            return None
        hints = typing.get_type_hints(current)
        current = hints.get(part) if isinstance(hints.get(part), type) else None
    return current if current is not None and dataclasses.is_dataclass(current) else None


def _dotted_key(schema: type, merged: DictConfig, exc: InvalidValue) -> str:
    """The dotted key of the value a nested schema refused: among the fields of its type, the one holding it."""
    candidates = [".".join([*path, exc.key]) for path in _paths_of(schema, exc.owner)]
    for key in (entry for candidate in candidates for entry in _entries(merged, candidate)):
        if repr(OmegaConf.select(merged, key)) == repr(exc.value):
            return key
    return candidates[0] if candidates else exc.key


def _entries(merged: DictConfig, key: str) -> list[str]:
    """``key`` with each ``<key>`` replaced by the keys of the mapping at that place in ``merged`` (all of them)."""
    if "<key>" not in key:
        return [key]
    head, tail = key.split("<key>", 1)
    mapping = OmegaConf.select(merged, head.rstrip(".")) if head else merged
    names = [str(name) for name in mapping.keys()] if isinstance(mapping, DictConfig) else []
    return [entry for name in names for entry in _entries(merged, f"{head}{name}{tail}")]


def _paths_of(schema: type, owner: type, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """Dotted paths of every field of ``schema`` (nested) whose type is ``owner``; ``[[]]`` for the schema itself."""
    if schema is owner:
        return [list(prefix)]
    if not dataclasses.is_dataclass(schema) or len(prefix) > 6:
        return []
    hints = typing.get_type_hints(schema)
    found: list[list[str]] = []
    for f in dataclasses.fields(schema):
        hint = hints.get(f.name)
        inner = _mapping_value_schema(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            found += _paths_of(hint, owner, (*prefix, f.name))
        elif inner is not None:
            found += _paths_of(inner, owner, (*prefix, f.name, "<key>"))
    return found


def saved_as_today(schema: type, path: Path) -> str | None:
    """The YAML text a run directory's saved config would have if it were written today.

    Read as ``schema`` (older keys at their new place, options spelled out, defaults of options added since) and
    written again; None when it cannot be read so (then it is compared as written).
    """
    try:
        return to_yaml(load_config(schema, path, quiet=True))
    except (ConfigError, OSError):
        return None


def to_yaml(cfg: Any) -> str:
    """The YAML text of a config dataclass (what a run directory saves as ``config.yaml``)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


@cache
def field_docs(schema: type) -> dict[str, str]:
    """The attribute docstring under each field of a dataclass, by field name."""
    docs: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def config_help(schema: type, prefix: str = "") -> list[str]:
    """One line per option of ``schema`` (nested dataclasses flattened to dotted keys): key, default and help."""
    lines: list[str] = []
    docs = field_docs(schema)
    hints = typing.get_type_hints(schema)
    instance = schema()
    for f in dataclasses.fields(schema):
        key = prefix + f.name
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(hints.get(f.name)) and dataclasses.is_dataclass(value):
            lines.append(f"{key}.*: {docs.get(f.name, '')}")
            lines.extend(config_help(type(value), key + "."))
            continue
        shown = repr(value) if isinstance(value, str) else _flow_yaml(value)
        lines.append(f"{key} = {shown}: {docs.get(f.name, '')}")
        entry = _mapping_value_schema(hints.get(f.name))
        if entry is not None:  # e.g. tasks: dict[str, CompareTaskConfig]: document the fields of one entry
            lines.extend(config_help(entry, key + ".<key>."))
    return lines


def _flow_yaml(value: Any) -> str:
    """``value`` as one line of YAML: ``[sgd, adam]``, ``{}``, ``0.1``, ``null``, ``[{name: quadratic}]``."""
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=2**31).strip()
    return text.removesuffix("...").strip()  # a bare scalar is dumped as a document ending in "..."


def _plain(value: Any) -> Any:
    """``value`` with dataclass instances (e.g. the entries of a ``list[TaskConfig]`` default) turned into dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _mapping_value_schema(annotation: Any) -> type | None:
    """``X`` when ``annotation`` is ``dict[str, X]`` with ``X`` a dataclass, else None."""
    if typing.get_origin(annotation) is not dict:
        return None
    args = typing.get_args(annotation)
    value = args[1] if len(args) == 2 else None
    return value if isinstance(value, type) and dataclasses.is_dataclass(value) else None
