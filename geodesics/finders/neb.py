"""Nudged elastic band with a climbing image and adaptive image insertion (AutoNEB).

After Jónsson et al. (1998), Henkelman & Jónsson (2000) and Henkelman et al. (2000) for NEB, its improved tangent
and the climbing image; Kolsbjerg et al. (2016) and Draxler et al. (2018, PyTorch-AutoNEB) for the cycles of
relaxation and insertion. The path is a chain of images [A, x_1, ..., x_M, B] with fixed ends. Every NEB iteration
evaluates the training loss and its gradient at all images in one batched call and moves each image along

    g_i = grad F(x_i) - (grad F(x_i) . tau_i) tau_i            (the loss force perpendicular to the path)

with tau_i the energy-weighted tangent of Henkelman & Jónsson; the highest image, once the climbing image is on,
moves along grad F - 2 (grad F . tau) tau instead (it climbs to the saddle). Images are kept evenly spaced by arc
length after each step (the reference code's infinite spring, the climbing image a fixed pivot), or pulled by a
spring force k (|x_{i+1} - x_i| - |x_i - x_{i-1}|) tau_i. A cycle runs up to ``max_steps`` iterations and stops
early when every image is inside its target (alpha * L0; the climbing image: L0).

Before the first cycle and after each one, the polyline through the images is certified with the same segment
checks as DSS (:func:`~geodesics.curve.segment_maxima`), so "connected" means what it means for every finder. The
first cycle starts from ``neb.initial_images`` images spread evenly on the chord (AutoNEB's ``equal`` insertion);
after a cycle that leaves segments above L0, ``neb.insert_per_cycle`` images are inserted into the failing segments
with the highest certified maxima, at their argmax (AutoNEB's ``highest`` insertion). Budgets follow DSS: cycles
(``max_rounds``), images with the endpoints (``max_beads``), wall time and loss evaluations, each giving its reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from envs.seeding import derive_seed
from geodesics.curve import SegmentMax, segment_maxima
from geodesics.finders.base import DSSConfig, Pair
from geodesics.finders.common import (
    Budget,
    StackOptimizer,
    bead_jitter,
    finish_string,
    new_bead,
    pair_by_pair,
    round_record,
)
from geodesics.finders.settings import NEBConfig
from geodesics.path import BeadString
from geodesics.space import ParamSpace

__all__ = ["connect_neb", "neb_gradients", "redistribute", "tangents"]

_TINY = 1e-30


def tangents(path: Tensor, energies: Tensor) -> Tensor:
    """Unit tangents ``(M, P)`` at the interior images of ``path (M + 2, P)`` (Henkelman & Jónsson 2000).

    Towards the higher neighbour where the energy rises or falls monotonically through the image; at a local
    extremum the two directions are mixed with weights from the energy differences, so the tangent turns smoothly.
    Where neither rule gives a direction (equal energies), the bisector of the two unit directions.

    Args:
        path: the chain, endpoints included.
        energies: loss at every image of the chain ``(M + 2,)``.
    """
    forward, backward = path[2:] - path[1:-1], path[1:-1] - path[:-2]
    prev, here, nxt = energies[:-2], energies[1:-1], energies[2:]
    rising = ((nxt > here) & (here > prev)).unsqueeze(1)
    falling = ((nxt < here) & (here < prev)).unsqueeze(1)
    big = torch.maximum((nxt - here).abs(), (prev - here).abs()).unsqueeze(1).to(path.dtype)
    small = torch.minimum((nxt - here).abs(), (prev - here).abs()).unsqueeze(1).to(path.dtype)
    mixed = torch.where((nxt > prev).unsqueeze(1), forward * big + backward * small, forward * small + backward * big)
    tau = torch.where(rising, forward, torch.where(falling, backward, mixed))
    norm = tau.norm(dim=1, keepdim=True)
    unit = forward / forward.norm(dim=1, keepdim=True).clamp(min=_TINY)
    bisector = unit + backward / backward.norm(dim=1, keepdim=True).clamp(min=_TINY)
    tau = torch.where(norm > 0, tau, bisector)
    return tau / tau.norm(dim=1, keepdim=True).clamp(min=_TINY)


def neb_gradients(
    path: Tensor, energies: Tensor, grads: Tensor, climber: int = -1, spring: float | None = None
) -> Tensor:
    """The NEB step direction ``(M, P)`` of the interior images (what the optimizer descends).

    Args:
        path: the chain ``(M + 2, P)``, endpoints included.
        energies: loss at every image ``(M + 2,)``.
        grads: loss gradients at the interior images ``(M, P)``.
        climber: interior index of the climbing image (-1: none).
        spring: spring constant of the force along the tangent, or None when the images are redistributed instead.
    """
    tau = tangents(path, energies)
    along = (grads * tau).sum(dim=1, keepdim=True)
    out = grads - along * tau
    if spring is not None:
        gaps = (path[1:] - path[:-1]).norm(dim=1)
        out = out - spring * (gaps[1:] - gaps[:-1]).unsqueeze(1) * tau
    if climber >= 0:
        out[climber] = grads[climber] - 2 * along[climber] * tau[climber]
    return out


def redistribute(path: Tensor, pivots: Sequence[int]) -> Tensor:
    """The chain with the images between consecutive ``pivots`` evenly spaced by arc length along it.

    Args:
        path: the chain ``(K, P)``.
        pivots: sorted indices that stay where they are, ``0`` and ``K - 1`` included.
    """
    out = path.clone()
    for lo, hi in zip(pivots[:-1], pivots[1:]):
        if hi - lo < 2:
            continue
        piece = path[lo : hi + 1]
        gaps = (piece[1:].double() - piece[:-1].double()).norm(dim=1)
        cumulative = torch.cat([gaps.new_zeros(1), gaps.cumsum(0)])
        if float(cumulative[-1]) == 0:
            continue
        targets = torch.arange(1, hi - lo, dtype=torch.float64, device=path.device) / (hi - lo) * cumulative[-1]
        index = (torch.searchsorted(cumulative, targets, right=True) - 1).clamp(0, len(gaps) - 1)
        local = ((targets - cumulative[index]) / gaps[index].clamp(min=_TINY)).clamp(0.0, 1.0)
        out[lo + 1 : hi] = torch.lerp(piece[index], piece[index + 1], local.to(path.dtype).unsqueeze(1))
    return out


def connect_neb(
    space: ParamSpace,
    pairs: Sequence[Pair],
    thresholds: Sequence[float],
    endpoint_losses: Tensor,
    keys: Sequence[int],
    config: DSSConfig,
) -> list[BeadString]:
    """AutoNEB of every pair, one after the other (a ``PathFinder``, registered as ``neb``)."""
    return pair_by_pair(space, pairs, thresholds, endpoint_losses, keys, config, _connect_pair)


def _insertions(
    path: list[Tensor], checks: list[SegmentMax], threshold: float, cycle: int, config: DSSConfig,
    jitter: torch.Generator,
) -> list[tuple[int, Tensor]]:  # fmt: skip
    """``(segment, image)`` to insert before a cycle: evenly on the chord first, then into the worst failing ones."""
    if cycle == 0 and config.options(NEBConfig).initial_images:
        count = config.options(NEBConfig).initial_images
        evenly = [SegmentMax(t=(k + 1) / (count + 1), value=0.0, tolerance=0.0, evaluations=0) for k in range(count)]
        return [(0, new_bead(path[0], path[1], check, config, jitter)) for check in evenly]
    failing = sorted((i for i, c in enumerate(checks) if c.upper > threshold), key=lambda i: -checks[i].upper)
    chosen = sorted(failing[: config.options(NEBConfig).insert_per_cycle])
    return [(i, new_bead(path[i], path[i + 1], checks[i], config, jitter)) for i in chosen]


def _connect_pair(
    space: ParamSpace, a: Tensor, b: Tensor, threshold: float, endpoint_losses: Tensor, key: int, config: DSSConfig
) -> BeadString:
    budget = Budget.of(config, space)
    jitter = bead_jitter(config, key)
    path, losses = [a, b], endpoint_losses.tolist()
    checks = segment_maxima(space, a.unsqueeze(0), b.unsqueeze(0), config.curve)
    initial = checks[0].upper
    history = [round_record(0, path, 0, checks, threshold, 0, budget, config)]
    reason, cycle = "", 0
    while any(c.upper > threshold for c in checks):
        failing = sum(c.upper > threshold for c in checks)
        if cycle == config.max_rounds:
            reason = f"rounds: max_rounds={config.max_rounds} cycles used and {failing} segments are still above L0"
            break
        reason = budget.exhausted(f"after {cycle} cycles")
        if reason:
            break
        inserts = _insertions(path, checks, threshold, cycle, config, jitter)
        if len(path) + len(inserts) > config.max_beads:
            reason = (
                f"beads: {len(inserts)} more images would exceed max_beads={config.max_beads} ({len(path)} on the path)"
            )
            break
        for segment, image in reversed(inserts):  # in path order: from the right, the indices hold
            path.insert(segment + 1, image)
        cycle += 1
        seed = derive_seed(config.seed, "neb", key, cycle)
        interior, image_losses, steps = _relax(space, torch.stack(path[1:-1]), a, b, threshold, config, budget, seed)
        path = [a, *interior.unbind(0), b]
        losses = [losses[0], *image_losses.tolist(), losses[-1]]
        checks = segment_maxima(space, torch.stack(path[:-1]), torch.stack(path[1:]), config.curve)
        history.append(round_record(cycle, path, len(inserts), checks, threshold, steps, budget, config))
    return finish_string(space, path, losses, checks, threshold, reason=reason, method="neb", history=history,
                         config=config, initial_segment_max=initial)  # fmt: skip


def _relax(
    space: ParamSpace, images: Tensor, a: Tensor, b: Tensor, threshold: float, config: DSSConfig, budget: Budget,
    seed: int,
) -> tuple[Tensor, Tensor, int]:  # fmt: skip
    """One NEB cycle: ``(images, their evaluation losses, iterations)``."""
    neb = config.options(NEBConfig)
    optimizer = StackOptimizer(config, space, images)
    batches = space.task.batches(seed)
    ends, end_batch, end_energies = torch.stack([a, b]), None, torch.empty(0)
    losses: Tensor | None = None
    steps = 0
    for step in range(1, config.max_steps + 1):
        if budget.expired:
            break
        steps = step
        batch = next(batches)
        energies, grads = space.batched_value_and_grad(images, batch)
        if batch is not end_batch:  # a full-batch task yields the same batch: its ends are evaluated once
            end_batch, end_energies = batch, space.batched_loss(ends, batch)
        chain = torch.cat([a.unsqueeze(0), images, b.unsqueeze(0)])
        all_energies = torch.cat([end_energies[:1], energies, end_energies[1:]]).to(torch.float64)
        climber = int(energies.argmax()) if neb.climb and step > neb.climb_after else -1
        direction = neb_gradients(chain, all_energies, grads, climber, None if neb.redistribute else neb.spring)
        images = optimizer.step(images, direction)
        if neb.redistribute:
            pivots = [0, climber + 1, len(images) + 1] if climber >= 0 else [0, len(images) + 1]
            images = redistribute(torch.cat([a.unsqueeze(0), images, b.unsqueeze(0)]), pivots)[1:-1]
        losses = None
        if step % config.check_every == 0:
            losses = space.batched_eval_loss(images).to(torch.float64)
            targets = torch.full_like(losses, config.alpha * threshold)
            if climber >= 0:
                targets[climber] = threshold
            if bool((losses <= targets).all()):
                break
    if losses is None:
        losses = space.batched_eval_loss(images).to(torch.float64)
    return images, losses, steps
