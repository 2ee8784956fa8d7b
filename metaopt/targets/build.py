"""Geodesic targets: the DSS engine reused as a data generator for the learned optimizer (the proposal's idea).

A base optimizer (Adam by default) trains a task from ``init_model(seed)`` on ``batches(seed)`` and its iterates
theta_0 .. theta_N are recorded. For windows (theta_t, theta_{t+T}), t = 0, S, 2S, ..., DSS connects the two ends inside
the level set L0 = F(theta_t) (1 + slack) of the evaluation loss F (the ``start`` rule; ``between`` and ``descent``:
:func:`window_levels`), and the path is re-spaced by arc length into T + 1 target points: the first is theta_t and the
last theta_{t+T}, exactly. A window whose far end is above the level, or
whose string does not connect, is kept with ``connected=False`` and its reason; its target points are those of the
unfinished string. :func:`make_shard` returns one base run as a shard (:mod:`metaopt.targets.dataset` stores it).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from envs.task import Task
from envs.training.fit import fit
from geodesics import (
    BeadString,
    DSSConfig,
    LevelProfile,
    Linear,
    ParamSpace,
    Projection,
    ProjectionConfig,
    connect_many,
    polyline_at,
    project_to_level,
)
from metaopt.targets.dataset import FORMAT_VERSION

__all__ = ["LEVEL_RULES", "base_trajectory", "make_shard", "rule_description", "window_levels", "window_starts"]


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


LEVEL_RULES = ("start", "between", "descent")
"""Level rules of the windows: ``start`` (L = F(theta_t)(1 + slack)), ``between`` and ``descent`` (see
:func:`window_levels`)."""


def window_levels(
    eval_losses: Tensor, starts: list[int], window: int, rule: str, q: float, slack: float
) -> list[float | LevelProfile]:
    """The level of each window, from the evaluation losses F of its two ends.

    ``start``: L = F(theta_t) (1 + slack), the level set of the window's start (measured to give straight chords).
    ``between``: L = F(theta_{t+T}) + (q + slack) (F(theta_t) - F(theta_{t+T})) with q + slack < 1: a level between
    the two ends (slack keeps the far end strictly inside), so theta_t lies above it and the path must first descend
    into it. ``descent``: the profile L(s) = F(theta_t) - (s - slack) (F(theta_t) - F(theta_{t+T})) over the
    arc-length fraction s (a :class:`geodesics.Linear` profile: the path must fall steadily, the point at fraction s
    at least the share s of the window's drop below F(theta_t), with slack times the drop to spare). A window whose
    loss did not fall falls back to ``start``'s level of the higher end (a plain level) under either of the two.
    """
    if rule not in LEVEL_RULES:
        raise ValueError(f"level must be one of {', '.join(LEVEL_RULES)}, got {rule!r}")
    if rule == "start":
        return [float(eval_losses[t]) * (1 + slack) for t in starts]
    if rule == "between" and not (0 <= q and q + slack < 1):
        raise ValueError(f"between needs 0 <= q and q + slack < 1, got q = {q}, slack = {slack}")
    levels: list[float | LevelProfile] = []
    for t in starts:
        start, end = float(eval_losses[t]), float(eval_losses[t + window])
        drop = start - end
        if not drop > 0:
            levels.append(max(start, end) * (1 + slack))
        elif rule == "between":
            levels.append(end + (q + slack) * drop)
        else:
            levels.append(Linear(start + slack * drop, end + slack * drop))
    return levels


def rule_description(rule: str, q: float, slack: float) -> str:
    """The level rule in words, for reports."""
    if rule == "start":
        return f"F(theta_t)(1 + {slack:g})"
    if rule == "between":
        return (f"F(theta_t+T) + {q + slack:g} (F(theta_t) - F(theta_t+T)), reached from theta_t by "
                "projection")  # fmt: skip
    return (f"the descent profile F(theta_t) - (s - {slack:g}) (F(theta_t) - F(theta_t+T)) over the arc-length "
            "fraction s, certified along the whole path")  # fmt: skip


def _level_at(level: float | LevelProfile, fraction: float) -> float:
    return level.at(fraction) if isinstance(level, LevelProfile) else level


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
    level: str = "start",
    q: float = 0.0,
    projection: ProjectionConfig | None = None,
) -> dict[str, Any]:
    """Run the base optimizer and build every window's targets, all windows connected concurrently.

    With ``level="between"`` each window's path is the projection leg from theta_t to the nearest point p of its
    level set (:func:`geodesics.project_to_level`) followed by the DSS string from p to theta_{t+T} inside the level;
    the window records the two parts' lengths apart (``descent_length``: ||p - theta_t|| and ``inside_length``: the
    string's length, both over ||theta_{t+T} - theta_t||; ``normalized_length`` is their sum). With
    ``level="descent"`` the DSS string runs from theta_t to theta_{t+T} under the window's descent profile (no
    projection leg: ``descent_length`` 0); ``level`` records the profile at theta_t and ``level_end`` at theta_{t+T}
    (the same number under a plain level).

    Returns:
        The shard as a dictionary (what :func:`~metaopt.targets.dataset.save_shard` writes).
    """
    space = ParamSpace.from_task(problem)
    iterates, losses = base_trajectory(problem, seed, optimizer, lr, steps)
    levels_all = space.batched_eval_loss(iterates).to(torch.float64)
    starts = window_starts(steps, window, stride)
    levels = window_levels(levels_all, starts, window, level, q, slack)
    heads, reasons = _project_heads(space, iterates, levels_all, starts, levels, window, level, projection)
    todo = [i for i in range(len(starts)) if i not in reasons]
    firsts = {i: heads[i].point if i in heads else iterates[starts[i]] for i in todo}
    strings = connect_many(
        space, [(firsts[i], iterates[starts[i] + window]) for i in todo], [levels[i] for i in todo], dss,
        keys=[starts[i] for i in todo],
    )  # fmt: skip
    by_index = dict(zip(todo, strings))
    windows = []
    for i, t in enumerate(starts):
        a, b = iterates[t], iterates[t + window]
        if i in by_index:
            targets, fields = _connected_window(a, b, by_index[i], heads.get(i), window)
        else:
            targets, fields = _refused_window(a, b, reasons[i], window)
        windows.append({"t": t, "level": _level_at(levels[i], 0.0), "level_end": _level_at(levels[i], 1.0),
                        "rule": level, "q": q, "targets": targets, **fields})  # fmt: skip
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
        "level": level,
        "q": q,
        "dss": asdict(dss),
        "strategy": space.strategy,
        "iterates": iterates.cpu(),
        "train_losses": losses,
        "eval_losses": levels_all.cpu(),
        "windows": windows,
    }


def _project_heads(
    space: ParamSpace, iterates: Tensor, levels_all: Tensor, starts: list[int], levels: list[Any], window: int,
    level: str, projection: ProjectionConfig | None,
) -> tuple[dict[int, Projection], dict[int, str]]:  # fmt: skip
    """The first phase of a shard: which windows cannot be connected (and why), and the projection legs of ``between``.

    Returns:
        ``(heads, reasons)``: the projection of theta_t onto its level by window index (``level="between"`` only,
        where theta_t lies above the level), and the reason by window index for each window refused.
    """
    heads: dict[int, Projection] = {}
    reasons: dict[int, str] = {}
    for i, t in enumerate(starts):
        if float(levels_all[t + window]) > _level_at(levels[i], 1.0):
            reasons[i] = (
                f"endpoint: F(theta_{t + window}) = {float(levels_all[t + window]):.6g} is above L0 = "
                f"{_level_at(levels[i], 1.0):.6g}"
            )
        elif level == "between" and float(levels_all[t]) > _level_at(levels[i], 0.0):  # a plain level here
            head = project_to_level(space, iterates[t], _level_at(levels[i], 0.0), projection)
            heads[i] = head
            if not head.reached:
                reasons[i] = (
                    f"projection: theta_{t} reached F = {head.loss:.6g} above L0 = {levels[i]:.6g} in {head.steps} "
                    "steps; raise projection.max_steps"
                )
    return heads, reasons


def _connected_window(
    a: Tensor, b: Tensor, string: BeadString, head: Projection | None, window: int
) -> tuple[Tensor, dict[str, Any]]:
    """A connected window's targets (its path at T + 1 equally spaced arc lengths) and its record's fields."""
    chord = float((b.double() - a.double()).norm()) or 1.0
    path = torch.cat([a.unsqueeze(0), string.beads.to(a.dtype)]) if head is not None else string.beads
    targets = polyline_at(path.cpu(), torch.linspace(0.0, 1.0, window + 1, dtype=torch.float64))
    descent = head.distance / chord if head is not None else 0.0
    inside = string.length / chord
    fields = {"connected": string.connected, "reason": string.reason, "normalized_length": descent + inside,
              "descent_length": descent, "inside_length": inside,
              "inside_normalized_length": string.normalized_length, "num_beads": string.num_beads,
              "projection_orthogonality": head.orthogonality if head is not None else 0.0}  # fmt: skip
    return targets, fields


def _refused_window(a: Tensor, b: Tensor, reason: str, window: int) -> tuple[Tensor, dict[str, Any]]:
    """A refused window's targets (the chord, so every shard has the same shape) and its record's fields."""
    targets = torch.lerp(a.unsqueeze(0), b.unsqueeze(0), torch.linspace(0, 1, window + 1).unsqueeze(1))
    targets[0], targets[-1] = a, b
    fields = {"connected": False, "reason": reason, "normalized_length": math.nan, "num_beads": 2,
              "descent_length": math.nan, "inside_length": math.nan, "inside_normalized_length": math.nan,
              "projection_orthogonality": math.nan}  # fmt: skip
    return targets, fields
