"""Learned-optimizer checkpoints: the network's architecture, a format version and its weights, in one file.

A checkpoint is a dict ``{"format", "version", "config", "state_dict", "info"}`` saved atomically with
``torch.save``. ``config`` is the :class:`~metaopt.lstm.LSTMConfig` as a dict, so a file rebuilds its own network;
``info`` is free-form provenance (task family, meta-step, validation score). The meta-trainer's resume file
(``checkpoints/last.pt``) is a checkpoint with one more key, ``trainer``, so it also loads as an optimizer.
Anything else (a missing, truncated, foreign, newer or inconsistent file) raises one :class:`CheckpointError` that
names the problem and the fix.
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from envs.tooling.runs import atomic_torch_save
from metaopt.lstm import CoordinateLSTM, LSTMConfig

__all__ = ["FORMAT", "VERSION", "CheckpointError", "load_checkpoint", "load_net", "save_checkpoint"]

FORMAT = "metaopt.coordinate_lstm"
"""Value of the ``format`` key that marks a learned-optimizer checkpoint."""
VERSION = 1
"""Checkpoint format version written by this code (and the only one it reads)."""

_FIX = "pass a checkpoint written by `metaopt train` (runs/<run>/checkpoints/best.pt or last.pt)"


class CheckpointError(ValueError):
    """A learned-optimizer checkpoint that cannot be used; the message names the problem and the fix."""


def save_checkpoint(path: str | Path, net: CoordinateLSTM, info: dict[str, Any] | None = None, **extra: Any) -> None:
    """Write ``net`` (architecture and weights) to ``path`` atomically.

    Args:
        path: destination file.
        net: the network.
        info: provenance stored alongside (JSON-like values).
        **extra: further top-level entries (the trainer's resume state).
    """
    state_dict = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": dataclasses.asdict(net.config),
        "state_dict": state_dict,
        "info": dict(info or {}),
        **extra,
    }
    atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint file; returns its dict (tensors on CPU).

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
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        keys = ", ".join(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a learned-optimizer checkpoint (it holds: {keys}); {_FIX}")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('version')!r}, this code reads version {VERSION}; "
            "load it with the version of metaopt that wrote it, or meta-train again"
        )
    return payload


def load_net(path: str | Path) -> CoordinateLSTM:
    """The network stored in a checkpoint, on CPU in the dtype it was saved in.

    Raises:
        CheckpointError: as :func:`load_checkpoint`, or when the weights do not fit the recorded architecture.
    """
    payload = load_checkpoint(path)
    try:
        config = LSTMConfig(**payload["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} records an architecture this code does not know ({exc}); {_FIX}") from None
    net = CoordinateLSTM(config)
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
