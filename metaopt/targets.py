"""Geodesic targets: the DSS engine reused as a data generator for the learned optimizer (the proposal's idea).

A base optimizer (Adam by default) trains a task from ``init_model(seed)`` on ``batches(seed)`` and its iterates
theta_0 .. theta_N are recorded. For windows (theta_t, theta_{t+T}), t = 0, S, 2S, ..., DSS connects the two ends inside
the level set L0 = F(theta_t) (1 + slack) of the evaluation loss F, and the string is re-spaced by arc length into T + 1
target points: the first is theta_t and the last theta_{t+T}, exactly. A window whose far end is above the level, or
whose string does not connect, is kept with ``connected=False`` and its reason; its target points are those of the
unfinished string.

One base run is one *shard* on disk (``targets/<label>-seed<k>.pt``): the run's iterates, losses and windows with their
provenance (task spec, seed, optimizer, t, T, L0, normalized length, beads, connected, reason, DSS settings).
:class:`TargetDataset` reads a directory of shards back as a list of :class:`TargetWindow`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from envs.optim import make_optimizer
from envs.task import Batch, Task
from envs.tooling.runs import atomic_torch_save
from geodesics.curve import CurveConfig
from geodesics.dss import DSSConfig, connect_many
from geodesics.space import ParamSpace

__all__ = [
    "FORMAT_VERSION",
    "TargetDataset",
    "TargetWindow",
    "TargetsError",
    "base_trajectory",
    "batches_from",
    "load_shard",
    "make_shard",
    "save_shard",
    "window_starts",
]

FORMAT_VERSION = 1


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


def window_starts(steps: int, window: int, stride: int) -> list[int]:
    """Start steps t = 0, S, 2S, ... with t + T <= N."""
    if window < 1 or stride < 1 or window > steps:
        raise ValueError(f"need 1 <= window ({window}) <= steps ({steps}) and stride >= 1 (got {stride})")
    return list(range(0, steps - window + 1, stride))


def batches_from(problem: Task, seed: int, step: int) -> Iterator[Batch]:
    """The batch stream of run ``seed`` positioned at ``step`` (the batch the step-``step`` update uses)."""
    batches = problem.batches(seed)
    for _ in range(step):
        next(batches)
    return batches


def base_trajectory(problem: Task, seed: int, optimizer: str, lr: float, steps: int) -> tuple[Tensor, Tensor]:
    """Train ``problem.init_model(seed)`` with a registered optimizer; return ``(iterates (N+1, P), losses (N,))``.

    The same loop as :func:`envs.fit` (loss of each step on its batch before the update), recording the flat
    parameters in ``model.parameters()`` order before the first step and after every step.
    """
    model = problem.init_model(seed)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    batches = problem.batches(seed)
    iterates = [torch.cat([p.detach().reshape(-1) for p in model.parameters()])]
    losses = []
    for step in range(steps):
        loss = problem.loss(model, next(batches))
        if not math.isfinite(float(loss.detach())):
            raise ValueError(f"the base optimizer {optimizer} (lr={lr:g}) diverged at step {step} on seed {seed}")
        losses.append(float(loss.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        iterates.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    return torch.stack(iterates), torch.tensor(losses, dtype=torch.float64)


def make_shard(
    problem: Task,
    seed: int,
    *,
    optimizer: str,
    lr: float,
    steps: int,
    window: int,
    stride: int,
    slack: float,
    dss: DSSConfig,
) -> dict[str, Any]:
    """Run the base optimizer and build every window's targets, all windows connected concurrently.

    Returns:
        The shard as a dictionary (what :func:`save_shard` writes).
    """
    space = ParamSpace.from_task(problem)
    iterates, losses = base_trajectory(problem, seed, optimizer, lr, steps)
    levels_all = space.batched_eval_loss(iterates).to(torch.float64)
    starts = window_starts(steps, window, stride)
    levels = [float(levels_all[t]) * (1 + slack) for t in starts]
    inside = [float(levels_all[t + window]) <= level for t, level in zip(starts, levels)]
    todo = [i for i, ok in enumerate(inside) if ok]
    strings = connect_many(
        space, [(iterates[starts[i]], iterates[starts[i] + window]) for i in todo], [levels[i] for i in todo], dss,
        keys=[starts[i] for i in todo],
    )  # fmt: skip
    by_index = dict(zip(todo, strings))
    windows = []
    for i, t in enumerate(starts):
        a, b = iterates[t], iterates[t + window]
        if i in by_index:
            string = by_index[i]
            targets = string.resample(window + 1).cpu()
            fields = {"connected": string.connected, "reason": string.reason,
                      "normalized_length": string.normalized_length, "num_beads": string.num_beads}  # fmt: skip
        else:
            targets = torch.lerp(a.unsqueeze(0), b.unsqueeze(0), torch.linspace(0, 1, window + 1).unsqueeze(1))
            targets[0], targets[-1] = a, b
            reason = (
                f"endpoint: F(theta_{t + window}) = {float(levels_all[t + window]):.6g} is above L0 = {levels[i]:.6g}"
            )
            fields = {"connected": False, "reason": reason, "normalized_length": math.nan, "num_beads": 2}
        windows.append({"t": t, "level": levels[i], "targets": targets, **fields})
    return {
        "format": "TargetShard",
        "version": FORMAT_VERSION,
        "task": problem.spec,
        "seed": seed,
        "optimizer": optimizer,
        "lr": lr,
        "steps": steps,
        "window": window,
        "stride": stride,
        "slack": slack,
        "dss": asdict(dss),
        "strategy": space.strategy,
        "iterates": iterates.cpu(),
        "train_losses": losses,
        "eval_losses": levels_all.cpu(),
        "windows": windows,
    }


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
        return DSSConfig(**settings, curve=curve)

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
