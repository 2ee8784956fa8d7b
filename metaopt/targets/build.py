"""Geodesic targets: the DSS engine reused as a data generator for the learned optimizer (the proposal's idea).

A base optimizer (Adam by default) trains a task from ``init_model(seed)`` on ``batches(seed)`` and its iterates
theta_0 .. theta_N are recorded. For windows (theta_t, theta_{t+T}), t = 0, S, 2S, ..., DSS connects the two ends inside
the level set L0 = F(theta_t) (1 + slack) of the evaluation loss F, and the string is re-spaced by arc length into T + 1
target points: the first is theta_t and the last theta_{t+T}, exactly. A window whose far end is above the level, or
whose string does not connect, is kept with ``connected=False`` and its reason; its target points are those of the
unfinished string. :func:`make_shard` returns one base run as a shard (:mod:`metaopt.targets.dataset` stores it).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from envs.fit import fit
from envs.task import Task
from geodesics import DSSConfig, ParamSpace, connect_many
from metaopt.targets.dataset import FORMAT_VERSION

__all__ = ["base_trajectory", "make_shard", "window_starts"]


def window_starts(steps: int, window: int, stride: int) -> list[int]:
    """Start steps t = 0, S, 2S, ... with t + T <= N."""
    if window < 1 or stride < 1 or window > steps:
        raise ValueError(f"need 1 <= window ({window}) <= steps ({steps}) and stride >= 1 (got {stride})")
    return list(range(0, steps - window + 1, stride))


def base_trajectory(problem: Task, seed: int, optimizer: str, lr: float, steps: int) -> tuple[Tensor, Tensor]:
    """Train ``problem.init_model(seed)`` with a registered optimizer; return ``(iterates (N+1, P), losses (N,))``.

    The run is :func:`envs.fit` (loss of each step on its batch before the update); the flat parameters, in
    ``model.parameters()`` order, are recorded before the first step and after every step.

    Raises:
        ValueError: the base optimizer diverged (a NaN or infinite training loss).
    """
    model = problem.init_model(seed)
    iterates = [_flat(model)]
    result = fit(problem, seed, optimizer=optimizer, lr=lr, steps=steps, model=model, evaluate=False,
                 callback=lambda step, loss, model: iterates.append(_flat(model)))  # fmt: skip
    if result.diverged:
        step = len(result.losses) - 1
        raise ValueError(f"the base optimizer {optimizer} (lr={lr:g}) diverged at step {step} on seed {seed}")
    return torch.stack(iterates), torch.tensor(result.losses, dtype=torch.float64)


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


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
        The shard as a dictionary (what :func:`~metaopt.targets.dataset.save_shard` writes).
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
