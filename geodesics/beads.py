"""Training many beads at once: one batched optimizer over a ``(M, P)`` stack, with per-bead stopping.

Line 8 of the DSS paper's Algorithm 1 trains each new bead until its loss is below alpha * L0. Here all the beads of a
round are trained together: the losses and gradients of the whole stack come from one ``ParamSpace`` call per step,
the optimizer update is elementwise over the stack (the functional twin, in :mod:`envs.training.functional`, of a
registered ``torch.optim`` optimizer: row by row its arithmetic), and a bead stops moving as soon as a check finds its
evaluation loss at or below its target. An optional penalty (the spring and hyperplane terms of constrained DSS) adds
its value and gradient per row. The endpoint trainer (:mod:`geodesics.endpoints`) trains batches of fresh models the
same way.

Near the minimum a first-order optimizer at a fixed learning rate stalls: on the paper's 1-4-4-1 regressions Adam
oscillates at a loss set by its step size, above targets such as 0.95 * 0.001. The opt-in finish ``lbfgs``
(:data:`FINISHES`) hands every bead still above its target after ``max_steps`` to ``torch.optim.LBFGS`` with a
strong-Wolfe line search, one bead at a time on one fixed training batch (the whole training set for full-batch
tasks), checked like the first-order phase. Without it (``finish="none"``, the default) nothing changes.

Free beads can also travel: at the low levels a bead trained from its segment's peak slides along the segment, past
its neighbours (measured on ``poly_quadratic`` at L0 = 0.001: new beads at t = -0.9 to 2.0 of their segments), and
the string folds back on itself. With ``normals`` each bead moves only in the hyperplane through its start
orthogonal to its segment (DSS's ``hyperplane`` option).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from envs.seeding import derive_seed
from envs.task import Batch
from envs.training.functional import FunctionalOptimizer, functional_from_spec
from envs.training.optim import get_optimizer_spec, list_optimizers
from geodesics.space import ParamSpace

__all__ = [
    "FINISHES",
    "BeadSchedule",
    "BeadTraining",
    "Penalty",
    "batched_optimizer",
    "batched_optimizers",
    "require_batched_optimizer",
    "train_beads",
]

Penalty = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``thetas (M, P) -> (values (M,), grads (M, P))`` added to the task loss of each bead."""

FINISHES = ("none", "lbfgs")
"""What :func:`train_beads` does with beads still above their target after ``max_steps``: ``none`` (leave them) or
``lbfgs`` (a second-order finish, :func:`lbfgs_finish`)."""


@dataclass
class BeadTraining:
    """Result of :func:`train_beads`."""

    beads: Tensor
    """Trained beads ``(M, P)``."""
    losses: Tensor
    """Evaluation loss of each bead at its last check ``(M,)``."""
    reached: Tensor
    """Which beads reached their target ``(M,)`` (bool)."""
    steps: Tensor
    """Optimizer steps each bead took ``(M,)``."""
    best_losses: Tensor
    """Lowest evaluation loss of each bead over its checks ``(M,)`` (inf for frozen rows)."""


def batched_optimizer(name: str) -> FunctionalOptimizer | None:
    """The functional twin of the optimizer registered as ``name`` (:mod:`envs.training.optim`); None without one."""
    return functional_from_spec(get_optimizer_spec(name))


def batched_optimizers() -> list[str]:
    """Names of the registered optimizers that can train a stack of beads (those with a functional twin)."""
    return [name for name in list_optimizers() if batched_optimizer(name) is not None]


def require_batched_optimizer(name: str) -> FunctionalOptimizer:
    """The functional twin of ``name``; a clear error naming the valid choices when it has none.

    Raises:
        ValueError: ``name`` has no batched twin.
    """
    rule = batched_optimizer(name)
    if rule is None:
        raise ValueError(
            f"optimizer {name!r} has no batched twin to train beads with; choose one of "
            f"{', '.join(batched_optimizers())}"
        )
    return rule


@dataclass(frozen=True)
class BeadSchedule:
    """How beads are trained: the slice of a finder's settings the bead trainer takes whole."""

    max_steps: int
    """First-order steps at most per bead (and per restart)."""
    lr: float
    """Learning rate of the first-order phase."""
    optimizer: str = "adam"
    """A registered optimizer with a functional twin (:func:`batched_optimizers`)."""
    check_every: int = 10
    """Evaluate the active beads every this many steps (and before the first step)."""
    finish: str = "none"
    """One of :data:`FINISHES`: ``lbfgs`` gives each bead still above its target after ``max_steps`` up to
    ``finish_steps`` L-BFGS iterations (:func:`lbfgs_finish`; not with a penalty)."""
    finish_steps: int = 0
    """L-BFGS iterations at most per bead (read only with ``finish="lbfgs"``)."""
    restarts: int = 0
    """Beads still above their target after both phases train again from where they stopped, with fresh optimizer
    state, up to this many times. At the low levels a bead can stall just above its target (L-BFGS finds no descent)
    where a fresh Adam phase moves it on."""

    def __post_init__(self) -> None:
        if self.finish not in FINISHES:
            raise ValueError(f"finish must be one of {', '.join(FINISHES)}, got {self.finish!r}")
        if self.finish_steps < 0:
            raise ValueError(f"finish_steps must be a non-negative integer, got {self.finish_steps!r}")
        if self.restarts < 0:
            raise ValueError(f"restarts must be a non-negative integer, got {self.restarts!r}")


def train_beads(
    space: ParamSpace,
    inits: Tensor,
    targets: Tensor,
    schedule: BeadSchedule,
    *,
    seed: int = 0,
    penalty: Penalty | None = None,
    frozen: Tensor | None = None,
    normals: Tensor | None = None,
) -> BeadTraining:
    """Train each row of ``inits`` until its evaluation loss is at most ``targets[row]``, or the schedule runs out.

    Three phases, each on the beads the last one left above their target: the first-order phase (one batched
    optimizer, per-bead stopping), the L-BFGS finish (``schedule.finish``), and the restarts (``schedule.restarts``).

    Args:
        space: the parameter space (its task gives the training batches and the evaluation set).
        inits: starting beads ``(M, P)`` (not modified).
        targets: per-bead target losses ``(M,)``.
        schedule: the steps, rate, optimizer, checks, finish and restarts.
        seed: seed of the training batch stream.
        penalty: optional extra term per bead (value and gradient), evaluated at every step.
        frozen: rows that must not move ``(M,)`` (bool); they are never trained and count as reached.
        normals: optional unit vectors ``(M, P)``: bead ``row`` then moves only in the hyperplane through
            ``inits[row]`` orthogonal to ``normals[row]`` (gradients and positions projected at every step, the
            finish's too).

    Raises:
        ValueError: ``finish="lbfgs"`` or ``restarts`` with a penalty.
    """
    if schedule.restarts and penalty is not None:
        raise ValueError("restarts train a subset of the beads and cannot take a penalty (constrained DSS)")
    if schedule.finish != "none" and penalty is not None:
        raise ValueError("finish='lbfgs' trains one bead at a time and cannot take a penalty (constrained DSS)")
    beads = space.check(inits, batched=True).clone()
    count = beads.shape[0]
    targets = targets.to(space.device, torch.float64)
    frozen = torch.zeros(count, dtype=torch.bool, device=space.device) if frozen is None else frozen.to(space.device)
    run = BeadTraining(
        beads=beads,
        losses=torch.full((count,), math.inf, dtype=torch.float64, device=space.device),
        reached=frozen.clone(),
        steps=torch.zeros(count, dtype=torch.long, device=space.device),
        best_losses=torch.full((count,), math.inf, dtype=torch.float64, device=space.device),
    )
    plane = None if normals is None else _Hyperplane(beads, normals.to(beads.device, beads.dtype))
    batches = space.task.batches(derive_seed(seed, "beads"))
    _first_order(space, run, targets, schedule, batches, penalty, plane)
    if schedule.finish == "lbfgs" and schedule.finish_steps > 0 and not bool(run.reached.all()):
        _lbfgs_phase(space, run, targets, schedule, next(batches), plane)
    if schedule.restarts > 0 and not bool(run.reached.all()):
        _restart(space, run, targets, schedule, seed, normals)
    return run


def _check(space: ParamSpace, run: BeadTraining, targets: Tensor) -> None:
    """Evaluate the beads not yet at their target; mark those that are; keep each bead's best loss."""
    todo = (~run.reached).nonzero().squeeze(1)
    if len(todo):
        run.losses[todo] = space.batched_eval_loss(run.beads[todo]).to(torch.float64)
        run.reached[todo] = run.losses[todo] <= targets[todo]
        run.best_losses[todo] = torch.minimum(run.best_losses[todo], run.losses[todo])


def _first_order(
    space: ParamSpace, run: BeadTraining, targets: Tensor, schedule: BeadSchedule, batches: Iterator[Batch],
    penalty: Penalty | None, plane: _Hyperplane | None,
) -> None:  # fmt: skip
    """The first-order phase: every bead not at its target steps, one batched optimizer, until it is."""
    rule = require_batched_optimizer(schedule.optimizer)
    beads = run.beads
    state = rule.init({"theta": beads})
    rates = torch.full((beads.shape[0],), float(schedule.lr), dtype=torch.float64, device=space.device)
    _check(space, run, targets)
    for step in range(1, schedule.max_steps + 1):
        active = (~run.reached).nonzero().squeeze(1)
        if len(active) == 0:
            break
        batch = next(batches)
        _, grads = space.batched_value_and_grad(beads[active], batch)
        if penalty is not None:
            grads = grads + penalty(beads)[1][active]
        grads = torch.nan_to_num(grads, nan=0.0, posinf=0.0, neginf=0.0)
        if plane is not None:
            grads = plane.tangent(grads, active)
        rows = {key: {"theta": buffers["theta"][active]} for key, buffers in state.items()}
        moved, rows = rule.update({"theta": beads[active]}, {"theta": grads}, rows, rates[active], step)
        beads[active] = moved["theta"] if plane is None else plane.project(moved["theta"], active)
        for key, buffers in rows.items():
            state[key]["theta"][active] = buffers["theta"]
        run.steps[active] += 1
        if step % schedule.check_every == 0 or step == schedule.max_steps:
            _check(space, run, targets)


def _lbfgs_phase(
    space: ParamSpace, run: BeadTraining, targets: Tensor, schedule: BeadSchedule, batch: Batch,
    plane: _Hyperplane | None,
) -> None:  # fmt: skip
    """The L-BFGS finish: each bead still above its target, one at a time, on one batch."""
    for row in (~run.reached).nonzero().squeeze(1).tolist():
        done = lbfgs_finish(space, run.beads[row], float(targets[row]), batch, max_steps=schedule.finish_steps,
                            check_every=schedule.check_every,
                            plane=None if plane is None else plane.row(row))  # fmt: skip
        run.beads[row] = done.theta
        run.losses[row] = done.loss
        run.best_losses[row] = min(float(run.best_losses[row]), done.best_loss)
        run.reached[row] = done.reached
        run.steps[row] += done.steps


def _restart(
    space: ParamSpace, run: BeadTraining, targets: Tensor, schedule: BeadSchedule, seed: int, normals: Tensor | None
) -> None:
    """The restarts: the beads still above their target train again from where they are, fresh optimizer state."""
    stalled = (~run.reached).nonzero().squeeze(1)
    again = train_beads(space, run.beads[stalled], targets[stalled],
                        dataclasses.replace(schedule, restarts=schedule.restarts - 1),
                        seed=derive_seed(seed, "restart"),
                        normals=None if normals is None else normals[stalled])  # fmt: skip
    run.beads[stalled], run.losses[stalled], run.reached[stalled] = again.beads, again.losses, again.reached
    run.steps[stalled] += again.steps
    run.best_losses[stalled] = torch.minimum(run.best_losses[stalled], again.best_losses)


class _Hyperplane:
    """The hyperplanes ``{x : (x - anchors[i]) . normals[i] = 0}`` of a stack of beads, and projections onto them."""

    def __init__(self, anchors: Tensor, normals: Tensor):
        self.anchors = anchors.clone()
        self.normals = normals

    def tangent(self, vectors: Tensor, rows: Tensor) -> Tensor:
        """``vectors (len(rows), P)`` without their components along the normals of ``rows``."""
        n = self.normals[rows]
        return vectors - (vectors * n).sum(1, keepdim=True) * n

    def project(self, points: Tensor, rows: Tensor) -> Tensor:
        """``points (len(rows), P)`` projected onto the hyperplanes of ``rows``."""
        anchors = self.anchors[rows]
        return anchors + self.tangent(points - anchors, rows)

    def row(self, row: int) -> tuple[Tensor, Tensor]:
        """``(anchor, normal)`` of one bead."""
        return self.anchors[row], self.normals[row]


@dataclass
class Finish:
    """Result of :func:`lbfgs_finish` for one bead."""

    theta: Tensor
    """The bead ``(P,)``."""
    loss: float
    """Its evaluation loss at the last check."""
    best_loss: float
    """The lowest evaluation loss over the checks."""
    reached: bool
    """Whether a check found it at or below its target."""
    steps: int
    """L-BFGS iterations taken."""


def lbfgs_finish(
    space: ParamSpace,
    theta: Tensor,
    target: float,
    batch: tuple[Tensor, Tensor],
    *,
    max_steps: int,
    check_every: int = 10,
    history_size: int = 20,
    plane: tuple[Tensor, Tensor] | None = None,
) -> Finish:
    """Minimise one bead's training loss with L-BFGS until its evaluation loss is at most ``target``.

    L-BFGS with a strong-Wolfe line search on ``batch``; it stops early when ``max_steps`` iterations run out or a
    chunk of ``check_every`` iterations leaves the training loss where it was (the line search found no descent).

    The evaluation loss is checked before the first iteration and every ``check_every`` iterations, as in the
    first-order phase of :func:`train_beads`. Each iteration may evaluate the loss more than once (the line search);
    every evaluation counts in ``space.evaluations``. Deterministic for a given device.

    Args:
        space: the parameter space.
        theta: the bead ``(P,)`` (not modified).
        target: the evaluation loss to reach.
        batch: the training batch whose loss is minimised.
        max_steps: L-BFGS iterations at most.
        check_every: iterations between evaluation checks.
        history_size: curvature pairs L-BFGS keeps.
        plane: optional ``(anchor, unit normal)``: the bead moves only in their hyperplane (every gradient projected
            onto it, so every L-BFGS direction lies in it, and the iterate projected back after each chunk).
    """
    x = space.check(theta).detach().clone()
    loss = float(space.batched_eval_loss(x[None])[0])
    best = loss
    if loss <= target:
        return Finish(x, loss, best, True, 0)
    x.requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=check_every, history_size=history_size,
                            line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> Tensor:
        values, grads = space.batched_value_and_grad(x.detach()[None], batch)
        grad = torch.nan_to_num(grads[0], nan=0.0, posinf=0.0, neginf=0.0)
        x.grad = grad if plane is None else grad - (grad @ plane[1]) * plane[1]
        return values[0].detach()

    taken, previous = 0, math.inf
    while taken < max_steps:
        opt.param_groups[0]["max_iter"] = min(check_every, max_steps - taken)
        before = int(opt.state[x].get("n_iter", 0))
        start = float(opt.step(closure))  # the training loss before this chunk of iterations
        if not start < previous:  # the last chunk did not lower the training loss: L-BFGS has stalled
            break
        previous = start
        moved = int(opt.state[x]["n_iter"]) - before
        taken += moved
        if plane is not None:  # remove the rounding drift off the hyperplane
            with torch.no_grad():
                x -= ((x - plane[0]) @ plane[1]) * plane[1]
        loss = float(space.batched_eval_loss(x.detach()[None])[0])
        best = min(best, loss)
        if loss <= target or moved == 0 or not math.isfinite(loss):
            break
    return Finish(x.detach(), loss, best, loss <= target, taken)
