"""Learned-rule checkpoints: the rule's registered name, its config, a format version and its weights, in one file.

A checkpoint is a dict ``{"format", "version", "rule", "config", "state_dict", "info"}`` saved atomically with
``torch.save``. ``rule`` names the rule class in :mod:`metaopt.rules` and ``config`` is its config dataclass as a
dict, so a file rebuilds its own rule; ``info`` is free-form provenance (task family, meta-step, validation score).
The meta-trainer's resume file (``checkpoints/last.pt``) is a checkpoint with one more key, ``trainer``, so it also
loads as an optimizer. Files written before rules were pluggable (format ``metaopt.coordinate_lstm``, version 1, no
``rule`` key) hold a coordinatewise LSTM and load as one. Anything else (a missing, truncated, foreign, newer or
inconsistent file) raises one :class:`CheckpointError` that names the problem and the fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from envs.tooling.runs import atomic_torch_save
from metaopt.pretrained import list_pretrained, pretrained_path
from metaopt.rules import LearnedRule, get_rule_class, rule_config, rule_name

__all__ = [
    "FORMAT",
    "LEGACY_FORMAT",
    "VERSION",
    "CheckpointError",
    "load_checkpoint",
    "load_net",
    "load_weights",
    "save_checkpoint",
]

FORMAT = "metaopt.learned_rule"
"""Value of the ``format`` key that marks a learned-rule checkpoint."""
VERSION = 2
"""Checkpoint format version written by this code."""
LEGACY_FORMAT = ("metaopt.coordinate_lstm", 1)
"""Format and version of the checkpoints written before rules were pluggable (all coordinatewise LSTMs); read too."""

_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
"""How a ``torch.save`` file starts: a zip archive (the format since torch 1.6), or a pickle (the legacy format)."""
_FIX = "pass a checkpoint written by `metaopt train` (runs/<run>/checkpoints/best.pt or last.pt)"
_MISMATCH = f"the file was written for another architecture, or edited by hand; {_FIX}"


class CheckpointError(ValueError):
    """A learned-optimizer checkpoint that cannot be used; the message names the problem and the fix."""


def save_checkpoint(path: str | Path, net: LearnedRule, info: dict[str, Any] | None = None, **extra: Any) -> None:
    """Write ``net`` (its rule name, config and weights) to ``path`` atomically.

    Args:
        path: destination file.
        net: the rule (of a registered class).
        info: provenance stored alongside (JSON-like values).
        **extra: further top-level entries (the trainer's resume state).
    """
    state_dict = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "rule": rule_name(net),
        "config": dataclasses.asdict(net.config),
        "state_dict": state_dict,
        "info": dict(info or {}),
        **extra,
    }
    atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint file; returns its dict (tensors on CPU), with ``rule`` filled in for old files.

    Raises:
        CheckpointError: missing, truncated or corrupt file; not a learned-optimizer checkpoint; other version.
    """
    path = Path(path)
    shipped = pretrained_path(str(path)) if not path.is_file() else None
    if shipped is not None:
        path = shipped
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (shipped rules: {', '.join(list_pretrained())}); {_FIX}")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(_TORCH_MAGIC):  # not a zip archive, not a pickle: torch.load fails in odd ways on it
        what = "an empty file" if not head else "a text file" if _is_text(path) else "not a file torch.save writes"
        raise CheckpointError(f"{path} is not a metaopt checkpoint ({what}); {_FIX}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on a damaged file; all mean the same here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if reason.startswith("Weights only load failed"):
            reason = "it holds Python objects, not only tensors and plain values"
        raise CheckpointError(
            f"checkpoint {path} is truncated, corrupt or not a torch checkpoint ({reason}); copy it again, or use "
            "the run's other checkpoint (best.pt / last.pt)"
        ) from None
    if isinstance(payload, dict) and (payload.get("format"), payload.get("version")) == LEGACY_FORMAT:
        return {**payload, "rule": "lstm"}
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, LEGACY_FORMAT[0]):
        keys = ", ".join(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a metaopt checkpoint (it holds: {keys}); {_FIX}")
    if payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('version')!r}, this code reads version {VERSION} "
            f"(and version {LEGACY_FORMAT[1]} of {LEGACY_FORMAT[0]}); load it with the version of metaopt that "
            "wrote it, or meta-train again"
        )
    return payload


def _is_text(path: Path) -> bool:
    try:
        path.read_bytes()[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def load_weights(rule: LearnedRule, state_dict: Any, source: str | Path) -> None:
    """Load ``state_dict`` into ``rule`` strictly: the same keys and the same shapes, else nothing is loaded.

    Args:
        rule: the rule to fill (its dtype is kept: the weights are cast to it).
        state_dict: the weights read from ``source``.
        source: the file they come from (named in the error).

    Raises:
        CheckpointError: ``state_dict`` is not a mapping of tensors, lacks a weight of ``rule``, has one ``rule``
            does not have, or has one of another shape.
    """
    state_dict = _tensors(state_dict, source)
    expected = {key: tuple(value.shape) for key, value in rule.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state_dict.items()}
    reshaped = [f"{k} {found[k]} where the rule has {expected[k]}" for k in sorted(set(expected) & set(found))
                if found[k] != expected[k]]  # fmt: skip
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    found_problems = (
        ("weights of another shape", reshaped),
        ("missing weights", missing),
        ("unexpected weights", unexpected),
    )
    problems = [f"{label}: {', '.join(keys)}" for label, keys in found_problems if keys]
    if problems:
        raise CheckpointError(f"{source}: the weights do not match the rule ({'; '.join(problems)}); {_MISMATCH}")
    rule.load_state_dict(state_dict)


def load_net(path: str | Path, options: Mapping[str, Any] | None = None) -> LearnedRule:
    """The rule stored in a checkpoint, on CPU in the dtype it was saved in.

    Args:
        path: a checkpoint written by ``metaopt train``, or the name of a shipped rule.
        options: rule options that replace the recorded ones (those that keep the weights' shapes, e.g. the ``tiny``
            rule's ``adapt_rate`` or ``weight_decay``); an unknown option or a bad value raises ``ValueError`` naming
            it, one that changes the weights' shapes a :class:`CheckpointError`.

    Raises:
        CheckpointError: as :func:`load_checkpoint`, or when the file names a rule that is not registered, an
            architecture its rule does not know, or weights that do not fit the recorded architecture (missing,
            unexpected or reshaped entries: weights are loaded strictly).
    """
    payload = load_checkpoint(path)
    try:
        cls = get_rule_class(str(payload.get("rule")))
        config = rule_config(str(payload.get("rule")), payload["config"])
    except (TypeError, ValueError, KeyError) as exc:
        known = f"{path} records a rule or architecture this code does not know ({exc})"
        raise CheckpointError(f"{known}; {_FIX}") from None
    if options:
        config = rule_config(str(payload.get("rule")), {**dataclasses.asdict(config), **options})
    state_dict = _tensors(payload.get("state_dict"), path)
    net = cls(config)
    if state_dict:
        net.to(next(iter(state_dict.values())).dtype)  # the dtype it was saved in
    load_weights(net, state_dict, f"{path} (architecture {config})")
    return net


def _tensors(state_dict: Any, source: str | Path) -> dict[str, torch.Tensor]:
    """``state_dict`` if it is a mapping of names to tensors; else a :class:`CheckpointError`."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{source} has no weights (a state_dict of tensors); {_FIX}")
    return state_dict
