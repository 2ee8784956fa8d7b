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
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from envs.tooling.runs import atomic_torch_save
from metaopt.rules import LearnedRule, get_rule_class, rule_config, rule_name

__all__ = ["FORMAT", "LEGACY_FORMAT", "VERSION", "CheckpointError", "load_checkpoint", "load_net", "save_checkpoint"]

FORMAT = "metaopt.learned_rule"
"""Value of the ``format`` key that marks a learned-rule checkpoint."""
VERSION = 2
"""Checkpoint format version written by this code."""
LEGACY_FORMAT = ("metaopt.coordinate_lstm", 1)
"""Format and version of the checkpoints written before rules were pluggable (all coordinatewise LSTMs); read too."""

_FIX = "pass a checkpoint written by `metaopt train` (runs/<run>/checkpoints/best.pt or last.pt)"


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
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; {_FIX}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is truncated, corrupt or not a torch checkpoint ({reason}); copy it again, or use "
            "the run's other checkpoint (best.pt / last.pt)"
        ) from None
    if isinstance(payload, dict) and (payload.get("format"), payload.get("version")) == LEGACY_FORMAT:
        return {**payload, "rule": "lstm"}
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, LEGACY_FORMAT[0]):
        keys = ", ".join(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a learned-optimizer checkpoint (it holds: {keys}); {_FIX}")
    if payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('version')!r}, this code reads version {VERSION} "
            f"(and version {LEGACY_FORMAT[1]} of {LEGACY_FORMAT[0]}); load it with the version of metaopt that "
            "wrote it, or meta-train again"
        )
    return payload


def load_net(path: str | Path) -> LearnedRule:
    """The rule stored in a checkpoint, on CPU in the dtype it was saved in.

    Raises:
        CheckpointError: as :func:`load_checkpoint`, or when the file names a rule that is not registered, an
            architecture its rule does not know, or weights that do not fit the recorded architecture.
    """
    payload = load_checkpoint(path)
    try:
        cls = get_rule_class(str(payload.get("rule")))
        config = rule_config(str(payload.get("rule")), payload["config"])
    except (TypeError, ValueError, KeyError) as exc:
        known = f"{path} records a rule or architecture this code does not know ({exc})"
        raise CheckpointError(f"{known}; {_FIX}") from None
    net = cls(config)
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path} has no weights (state_dict); {_FIX}")
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if found != expected:
        differing = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
        raise CheckpointError(
            f"{path}: its weights do not match the architecture it records ({config}); mismatched entries: "
            f"{', '.join(differing)}. The file was edited or assembled by hand; {_FIX}"
        )
    dtype = next(iter(state_dict.values())).dtype
    net.to(dtype).load_state_dict(state_dict)
    return net
