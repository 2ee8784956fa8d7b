"""Evolution strategies over the rule's weights: truncated ES and persistent ES (PES), antithetic.

Registered as ``es`` and ``pes``. Both perturb the flat vector theta of the rule's weights with antithetic Gaussian
pairs theta +- eps (eps ~ N(0, sigma^2 I)), run each perturbed rule for one truncation of T plain optimizer steps (no
meta-graph: any meta-objective works, differentiable or not), and combine the meta-losses:

* **truncated ES** (``es``): every pair starts from the optimizee's current state; the estimate
  ``1/(2 K sigma^2) sum_i (L(theta + eps_i) - L(theta - eps_i)) eps_i`` is unbiased for the gradient of the
  Gaussian-smoothed meta-loss of *this truncation* with the state held fixed, so, like truncated backprop, it
  ignores how theta shaped the state it starts from (the truncation bias);
* **PES** (Vicol, Metz & Sohl-Dickstein 2021): each particle keeps its own optimizee state across the truncations of
  an episode and the sum ``xi_i`` of the perturbations it has seen; the estimate uses ``xi_i`` in place of ``eps_i``,
  which makes it unbiased for the gradient of the whole episode's (smoothed) meta-loss.

The optimizees the loop passes in advance with the unperturbed rule on the same batches as the particles, so the
loop's metrics and the next truncation see the unperturbed run. The population of each optimizee runs in one of three
ways (``population``):

* ``loop``, the default: one particle after another (a Python loop over ``2 K`` particles, each a plain
  :class:`~metaopt.shells.LearnedOptimizer` in ``envs.fit``);
* ``vmap``: all ``2 K`` together, one ``torch.func.vmap`` call per inner step over stacked optimizee parameters, rule
  states and rule weights (:mod:`metaopt.outer.population`: the same steps, NaN guard and divergence convention; the
  meta-losses agree with the loop's to rounding, not bit for bit);
* ``stack``: the particles of every optimizee of one stack key (the same task object, model structure and options:
  optimizees of one task, not the members of a family) in one ``vmap`` call per inner step, each particle handed its
  optimizee's batch.

With ``vmap`` or ``stack`` the unperturbed optimizee runs as one more particle of its population (weights theta) and
is carried back into the optimizee (:func:`~metaopt.outer.population.carry_particle`), and the start offsets of the
meta-batch are taken together too (:func:`~metaopt.inner.stacked.advance_many`). PES particles persist in any form,
as optimizer objects or as stacked tensors. ``vmap`` and ``stack`` need a model without buffers or data-dependent
control flow and say so otherwise (every reference task that could be tried qualifies);
``benchmarks/es_population.py`` measures the three. Under data-parallel meta-training each rank runs the populations
of its share of the meta-batch; the noise of slot i is drawn from ``(seed, "es", meta_step, i)`` whichever rank holds
it.
"""

from __future__ import annotations

import copy
import itertools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from typing_extensions import override

from envs.errors import InvalidValue
from envs.seeding import generator
from envs.task import Batch
from envs.tooling.config import check_range
from envs.training.fit import fit
from metaopt.inner.stacked import advance_many, stack_key
from metaopt.inner.unroll import InnerState, Trajectory
from metaopt.outer.base import Estimator, EstimatorSetup, MetaGradient
from metaopt.outer.population import (
    POPULATIONS,
    StackedParticles,
    carry_particle,
    join_particles,
    run_stacked_many,
    split_particles,
    stack_particles,
)
from metaopt.rules import LearnedRule
from metaopt.shells import LearnedOptimizer

__all__ = ["ESConfig", "PersistentES", "TruncatedES", "rollout"]


@dataclass
class ESConfig:
    """Options of the evolution-strategy estimators."""

    pairs: int = 8
    """K: antithetic pairs per optimizee and truncation."""
    sigma: float = 0.01
    """Standard deviation of the perturbations of the rule's weights."""
    population: str = "loop"
    """How the 2 K particles run: loop (one LearnedOptimizer after another), vmap (all together, torch.func), or
    stack (the particles of every optimizee of the same task and shape together, one vmap call a step). vmap and
    stack also take the start offsets' plain steps of the meta-batch together."""

    def __post_init__(self) -> None:
        check_range(self, "pairs", low=1, integer=True)
        check_range(self, "sigma", low=0, low_open=True)
        if self.population not in POPULATIONS:
            raise InvalidValue(
                ESConfig, "population", self.population,
                f"must be one of {', '.join(POPULATIONS)}, got {self.population!r}",
            )  # fmt: skip


def rollout(inner: InnerState, batches: list[Batch], valid: list[Batch] | None = None) -> Trajectory:
    """T plain steps of ``inner`` on ``batches`` (T + 1 of them: the last scores theta_{t+T}), without a meta-graph.

    The optimizee's model and optimizer state are modified. The trajectory is what
    :func:`~metaopt.inner.unroll.unroll` would return, detached; with ``valid`` (T held-out batches) it also holds
    ``valid_losses``, iterate s scored on ``valid[s - 1]`` (infinite after a divergence).
    """
    iterates = [_flat(inner.model)]
    valid_losses: list[float] = []

    def record(_step: int, _loss: float, model: torch.nn.Module) -> None:
        iterates.append(_flat(model))
        if valid is not None:
            with torch.no_grad():
                valid_losses.append(float(inner.task.loss(model, valid[len(valid_losses)])))

    result = fit(inner.task, model=inner.model, optimizer=inner.optimizer, steps=len(batches) - 1, evaluate=False,
                 batches=iter(batches[:-1]), callback=record)  # fmt: skip
    losses = list(result.losses)
    if not result.diverged:
        with torch.no_grad():
            losses.append(float(inner.task.loss(inner.model, batches[-1])))
    else:  # the run stopped at a non-finite loss: pad so every trajectory has T + 1 entries
        losses += [float("inf")] * (len(batches) - len(losses))
        iterates += [iterates[-1]] * (len(batches) - len(iterates))
    start = inner.step
    inner.step += len(batches) - 1
    held_out = None
    if valid is not None:
        held_out = torch.tensor(valid_losses + [float("inf")] * (len(valid) - len(valid_losses)), dtype=torch.float64)
    return Trajectory(torch.tensor(losses, dtype=torch.float64), torch.stack(iterates), start, inner.context, held_out)


class _EvolutionStrategy(Estimator):
    """What truncated ES and PES share: perturbations, the estimate and its metrics."""

    Config = ESConfig
    config: ESConfig
    persistent = False

    def __init__(self, config: ESConfig | None, setup: EstimatorSetup):
        super().__init__(config, setup)
        self._particles: dict[int, _Particles] = {}
        self._working: LearnedRule | None = None
        self.population_losses: Tensor | None = None
        """``(len(inners), 2, K)``: the meta-losses of the last estimate's particles, + side first (diagnostics)."""

    @override
    def advance(self, rule: LearnedRule, inners: Sequence[InnerState], steps: Sequence[int]) -> None:
        if self.config.population != "loop" and rule.separable_by_model:
            advance_many(inners, rule, steps)
        else:
            super().advance(rule, inners, steps)

    @override
    def estimate(self, rule: LearnedRule, inners: Sequence[InnerState], *, meta_step: int) -> MetaGradient:
        cfg, setup = self.config, self.setup
        theta = parameters_to_vector(rule.parameters()).detach()
        if self._working is None or not _same_shapes(self._working, rule):
            self._working = copy.deepcopy(rule).requires_grad_(False)
        working = self._working
        total = torch.zeros(theta.numel(), dtype=torch.float64, device=theta.device)
        meta_losses, final_losses, spreads, populations = [], [], [], []
        drawn = []
        for index, inner in enumerate(inners):
            batches = [inner.take_batch()] + [next(inner.batches) for _ in range(setup.truncation)]
            valid = None  # the held-out batches of this truncation, the same for every particle
            if inner.valid_batches is not None:
                valid = [next(inner.valid_batches) for _ in range(setup.truncation)]
            noise = generator(setup.seed, "es", meta_step, self.slot_offset + index)  # the slot, not the rank's index
            eps = torch.randn(cfg.pairs, theta.numel(), generator=noise, dtype=torch.float64) * cfg.sigma
            eps = eps.to(theta.device)
            particles = self._particles_for(inner, working) if self.persistent else None
            drawn.append(_Drawn(inner, batches, valid, eps, particles))
        runs: list[tuple[Tensor, tuple[Trajectory, StackedParticles] | None]]
        if cfg.population != "loop":
            runs = list(self._vmap_populations(working, theta, drawn))
        else:
            runs = [(self._loop_population(d.inner, working, theta, d.eps, d.batches, d.valid, d.particles), None)
                    for d in drawn]  # fmt: skip
        for d, (signed, unperturbed) in zip(drawn, runs):
            inner, batches, valid, eps, particles = d.inner, d.batches, d.valid, d.eps, d.particles
            differences = torch.tensor([_finite_difference(float(a), float(b)) for a, b in zip(*signed)],
                                       dtype=torch.float64, device=theta.device)  # fmt: skip
            if particles is not None:
                particles.xi += eps
                particles.step = inner.step + setup.truncation
            direction = particles.xi if particles is not None else eps
            total += (differences[:, None] * direction).sum(0) / (2 * cfg.pairs * cfg.sigma**2)
            spreads.append(float(differences.abs().mean()))
            populations.append(signed)
            if unperturbed is None:
                trajectory = rollout(inner, batches, valid)  # the unperturbed optimizee, on the same batches
            else:  # it ran as one more particle of the population: carried into the optimizee
                trajectory, particle = unperturbed
                carry_particle(inner, working, particle)
                inner.step += setup.truncation
            inner.next_batch = batches[-1]  # it scored theta_{t+T}; the next step trains on it
            meta_losses.append(float(setup.objective(trajectory)))
            final_losses.append(float(trajectory.losses[-1]))
        self.population_losses = torch.stack(populations)
        grad = (total / len(inners)).to(theta.dtype)
        grads, offset = [], 0
        for weight in rule.parameters():
            grads.append(grad[offset : offset + weight.numel()].view_as(weight).clone())
            offset += weight.numel()
        metrics = {
            "loss": sum(meta_losses) / len(meta_losses),
            "final_loss": sum(final_losses) / len(final_losses),
            "es_mean_abs_difference": sum(spreads) / len(spreads),
        }
        return MetaGradient(tuple(grads), metrics)

    def _loop_population(
        self,
        inner: InnerState,
        working: LearnedRule,
        theta: Tensor,
        eps: Tensor,
        batches: list[Batch],
        valid: list[Batch] | None,
        particles: _Particles | None,
    ) -> Tensor:
        """``(2, K)`` meta-losses of the + and - particles, one ``rollout`` of a ``LearnedOptimizer`` after another."""
        signed = torch.empty(2, self.config.pairs, dtype=torch.float64)
        for pair in range(self.config.pairs):
            for side, sign in enumerate((1.0, -1.0)):
                if particles is not None:
                    assert isinstance(particles.states, tuple)
                    start = particles.states[side][pair]
                else:
                    start = _copy_inner(inner, working)
                vector_to_parameters((theta.double() + sign * eps[pair]).to(theta.dtype), working.parameters())
                signed[side, pair] = float(self.setup.objective(rollout(start, batches, valid)))
        return signed

    def _vmap_populations(
        self, working: LearnedRule, theta: Tensor, drawn: list[_Drawn]
    ) -> list[tuple[Tensor, tuple[Trajectory, StackedParticles]]]:
        """Per optimizee, ``(2, K)`` meta-losses of the + and - particles and the unperturbed run (:mod:`.population`).

        The unperturbed optimizee runs as one more particle (weights theta) beside its ``2 K``: its trajectory and
        its particle, to be carried into the optimizee. ``vmap``: each optimizee's ``2 K + 1`` particles together;
        ``stack``: those of every optimizee of one stack key (same task, structure and options) together.
        """
        pairs = self.config.pairs
        groups: dict[object, list[int]] = {}
        for index, d in enumerate(drawn):
            groups.setdefault(stack_key(d.inner) if self.config.population == "stack" else index, []).append(index)
        found: dict[int, tuple[Tensor, tuple[Trajectory, StackedParticles]]] = {}
        for members in groups.values():
            stacked, weights = [], []
            for d in (drawn[i] for i in members):
                if d.particles is not None:  # PES: its particles, then a copy of the optimizee
                    assert isinstance(d.particles.states, StackedParticles)
                    stacked.append(join_particles([d.particles.states, stack_particles(d.inner, working, 1)]))
                else:  # ES: every particle, and the unperturbed one, starts as a copy of the optimizee
                    stacked.append(stack_particles(d.inner, working, 2 * pairs + 1))
                weights.append(torch.cat([theta.double() + d.eps, theta.double() - d.eps, theta.double()[None]])
                               .to(theta.dtype))  # + side, - side, then the unperturbed optimizee  # fmt: skip
            runs = run_stacked_many([drawn[i].inner for i in members], working, weights, stacked,
                                    [drawn[i].batches for i in members], [drawn[i].valid for i in members])  # fmt: skip
            for i, trajectories, joined in zip(members, runs, stacked):
                population, unperturbed = split_particles(joined, [2 * pairs, 1])
                particles = drawn[i].particles
                if particles is not None:  # PES: the population goes on from here
                    assert isinstance(particles.states, StackedParticles)
                    particles.states.params, particles.states.state = population.params, population.state
                losses = [float(self.setup.objective(trajectory)) for trajectory in trajectories[:-1]]
                signed = torch.tensor(losses, dtype=torch.float64).view(2, pairs)
                found[i] = (signed, (trajectories[-1], unperturbed))
        return [found[i] for i in range(len(drawn))]

    def _particles_for(self, inner: InnerState, working: LearnedRule) -> _Particles:
        """The inner's PES particles: kept while the same optimizee continues, fresh copies of it otherwise."""
        self._particles = {k: v for k, v in self._particles.items() if v.owner() is not None}
        held = self._particles.get(id(inner))
        if held is not None and held.owner() is inner and held.step == inner.step:
            return held
        pairs = self.config.pairs
        states: tuple[list[InnerState], ...] | StackedParticles
        if self.config.population != "loop":
            states = stack_particles(inner, working, 2 * pairs)
        else:
            states = (
                [_copy_inner(inner, working) for _ in range(pairs)],
                [_copy_inner(inner, working) for _ in range(pairs)],
            )
        dim = sum(w.numel() for w in working.parameters())
        xi = torch.zeros(pairs, dim, dtype=torch.float64, device=working.device)
        particles = _Particles(weakref.ref(inner), inner.step, states, xi)
        self._particles[id(inner)] = particles
        return particles


@dataclass
class _Drawn:
    """What one optimizee's population runs on in a truncation."""

    inner: InnerState
    batches: list[Batch]
    """The T + 1 training batches (the last scores theta_{t+T})."""
    valid: list[Batch] | None
    """The T held-out batches, or None."""
    eps: Tensor
    """``(K, D)``: the perturbations of this truncation."""
    particles: _Particles | None
    """The persistent population (PES), or None."""


@dataclass
class _Particles:
    """The persistent population of one optimizee."""

    owner: weakref.ref
    """The optimizee the particles shadow."""
    step: int
    """The inner step at which they continue."""
    states: tuple[list[InnerState], ...] | StackedParticles
    """The + and - particle of each antithetic pair (loop), or all of them stacked, + side first (vmap)."""
    xi: Tensor
    """``(K, D)``: the sum of each pair's perturbations so far."""


class TruncatedES(_EvolutionStrategy):
    """Antithetic ES over the rule's weights, each truncation from the optimizee's current state (``es``)."""

    persistent = False


class PersistentES(_EvolutionStrategy):
    """Antithetic persistent ES: particles keep their own state and accumulated perturbations (``pes``)."""

    persistent = True


def _same_shapes(a: LearnedRule, b: LearnedRule) -> bool:
    return [w.shape for w in a.parameters()] == [w.shape for w in b.parameters()] and type(a) is type(b)


def _copy_inner(inner: InnerState, rule: LearnedRule) -> InnerState:
    """An independent copy of the optimizee (model, optimizer state) driven by ``rule``; no batch stream of its own."""
    model = copy.deepcopy(inner.model)
    optimizer = LearnedOptimizer(model.parameters(), rule=rule)
    optimizer.load_state_dict(copy.deepcopy(inner.optimizer.state_dict()))
    return InnerState(inner.task, model, optimizer, itertools.repeat(None), inner.step, None, inner.context)  # type: ignore[arg-type]


def _finite_difference(plus: float, minus: float) -> float:
    """``plus - minus``, with a diverged side (inf or NaN) counted as no information rather than poisoning the sum."""
    difference = plus - minus
    return difference if difference == difference and abs(difference) != float("inf") else 0.0


def _flat(model: torch.nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])
