"""A geodesic-target dataset on disk: shards of windows, read back as :class:`TargetWindow` objects.

One base run is one *shard* (``targets/<label>-seed<k>.pt``, built by :func:`metaopt.targets.build.make_shard`): the
run's iterates, losses and windows with their provenance (task spec, seed, optimizer, t, T, L0, normalized length,
beads, connected, reason, DSS settings). :class:`TargetDataset` reads a directory of shards back as a list of
:class:`TargetWindow`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from envs.tooling.runs import atomic_torch_save
from geodesics import CurveConfig, DSSConfig

__all__ = ["FORMAT_VERSION", "TargetDataset", "TargetWindow", "TargetsError", "load_shard", "save_shard"]

FORMAT_VERSION = 1
"""Shard format written and read by this code."""


class TargetsError(ValueError):
    """A targets directory or shard that cannot be used (missing, corrupt, written by another format)."""


@dataclass
class TargetWindow:
    """One window of a base trajectory and its geodesic target points."""

    task: dict[str, Any]
    """Spec of the task instance the window lives in (``Task.spec``)."""
    seed: int
    """Run seed of the base trajectory (initial weights and batch order)."""
    t: int
    """Start step of the window."""
    window: int
    """T: steps in the window."""
    level: float
    """L0 = F(theta_t) (1 + slack): the level set the geodesic stays in."""
    targets: Tensor
    """``(T + 1, P)``: target points equally spaced in arc length; ``targets[0]`` is theta_t, ``targets[-1]``
    theta_{t+T}."""
    connected: bool
    """Whether DSS connected the two ends inside the level set."""
    reason: str
    """Why not, when not connected."""
    normalized_length: float
    """Normalized length of the string (1: the straight segment)."""
    num_beads: int
    """Beads of the string, both ends included."""

    @property
    def start(self) -> Tensor:
        """theta_t."""
        return self.targets[0]

    @property
    def end(self) -> Tensor:
        """theta_{t+T}."""
        return self.targets[-1]


def save_shard(shard: dict[str, Any], path: str | Path) -> None:
    """Write a shard atomically."""
    atomic_torch_save(shard, path)


def load_shard(path: str | Path) -> dict[str, Any]:
    """Read a shard; a clear error for missing, corrupt or foreign files."""
    path = Path(path)
    try:
        shard = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TargetsError(f"no target shard at {path}") from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise TargetsError(f"{path} is not a readable target shard ({type(exc).__name__}: {exc})") from None
    if not isinstance(shard, dict) or shard.get("format") != "TargetShard":
        raise TargetsError(f"{path} is not a target shard (written by `metaopt targets`)")
    if shard.get("version") != FORMAT_VERSION:
        raise TargetsError(f"{path} has shard format {shard.get('version')}, this code reads {FORMAT_VERSION}")
    return shard


class TargetDataset:
    """All windows of a directory of shards (``<run>/targets/*.pt`` written by ``metaopt targets``).

    Args:
        path: the run directory of ``metaopt targets`` or its ``targets/`` folder.
        connected_only: keep only windows whose string connected.
    """

    def __init__(self, path: str | Path, connected_only: bool = True):
        folder = Path(path)
        if (folder / "targets").is_dir():
            folder = folder / "targets"
        files = sorted(folder.glob("*.pt"))
        if not files:
            raise TargetsError(f"no target shards in {folder}; run `metaopt targets CONFIG out={path}` first")
        self.shards = [load_shard(f) for f in files]
        self.windows: list[TargetWindow] = []
        for shard in self.shards:
            for w in shard["windows"]:
                if connected_only and not w["connected"]:
                    continue
                self.windows.append(TargetWindow(
                    task=shard["task"], seed=int(shard["seed"]), t=int(w["t"]), window=int(shard["window"]),
                    level=float(w["level"]), targets=w["targets"], connected=bool(w["connected"]),
                    reason=str(w["reason"]), normalized_length=float(w["normalized_length"]),
                    num_beads=int(w["num_beads"]),
                ))  # fmt: skip
        if not self.windows:
            raise TargetsError(f"the shards in {folder} hold no connected window; raise slack or the DSS budgets")

    @property
    def window(self) -> int:
        """T, the common window length."""
        sizes = {w.window for w in self.windows}
        if len(sizes) != 1:
            raise TargetsError(f"the shards mix window lengths {sorted(sizes)}; use one T per dataset")
        return sizes.pop()

    def dss_config(self) -> DSSConfig:
        """The DSS settings the dataset was built with (of its first shard)."""
        settings = dict(self.shards[0]["dss"])
        curve = CurveConfig(**settings.pop("curve"))
        return DSSConfig.from_dict({**settings, "curve": curve})

    def iterates_of(self, window: TargetWindow) -> Tensor:
        """The base run's iterates ``(N + 1, P)`` a window was cut from."""
        for shard in self.shards:
            if shard["task"] == window.task and int(shard["seed"]) == window.seed:
                return shard["iterates"]
        raise TargetsError(f"no shard of task {window.task['name']!r} and seed {window.seed} in this dataset")

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> TargetWindow:
        return self.windows[index]
