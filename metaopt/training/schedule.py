"""What each meta-training episode trains on: fresh optimizees, or windows of a geodesic-target dataset.

:class:`FreshEpisodes` draws ``meta_batch`` new optimizees per episode (the task family's tasks in turn across the
slots, run seeds from :func:`~metaopt.training.config.train_seed`) and unrolls them K = ``steps`` steps in
``steps / truncation`` meta-steps. :class:`DatasetWindows` draws ``meta_batch`` windows per episode (seeded by the
episode number) and takes one meta-step of T steps from each window's theta_t (the context carries the window's
target points, ``targets``, and the base run's iterates theta_t .. theta_{t+T}, ``teacher``); every
``on_policy_every`` episodes it first replaces the drawn windows' targets by a geodesic to where the learned
optimizer itself gets in T steps (:func:`on_policy_targets`: the optimizer runs in :func:`envs.fit`, DSS connects
inside the window's level set).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from envs.seeding import generator
from envs.task import Task
from envs.task.registry import make_task, task_from_spec
from envs.training.fit import fit
from geodesics import DSSConfig, ParamSpace, connect
from metaopt.inner import InnerState, start_episode, start_window
from metaopt.inner import advance as advance_one
from metaopt.objectives import needs_held_out
from metaopt.rules import LearnedRule
from metaopt.targets import TargetDataset, TargetWindow
from metaopt.training.augment import reparameterizable_layers, reparameterize_weights, rescale_gradients
from metaopt.training.config import TrainConfig, train_seed

__all__ = ["DatasetWindows", "FreshEpisodes", "on_policy_targets"]


class FreshEpisodes:
    """``meta_batch`` fresh optimizees per episode, ``steps / truncation`` truncations each.

    Slot i of episode e trains run seed :func:`~metaopt.training.config.train_seed` on the family member picked by
    ``task_sampling`` (``cycle``: ``tasks[i mod n]``; ``random``: drawn from the stream ``(seed, "family", e, i)``),
    with each of the member's ``choices`` drawn from the same stream; members with choices are built once per drawn
    spec. With ``start_offset`` the optimizee first takes a drawn number of plain steps of the current rule. With a
    held-out objective (``eval_loss``) every optimizee carries its task's held-out batches. With ``horizons`` each
    episode draws its length (stream ``(seed, "horizon", e)``), with ``grad_scales`` each optimizee its gradient
    factor (stream ``(seed, "grad_scale", e, i)``), with ``param_scales`` each of its layers a weight factor (stream
    ``(seed, "param_scale", e, i)``): separate streams, so the other draws do not move.
    """

    def __init__(self, cfg: TrainConfig, tasks: list[Task]):
        self.cfg, self.tasks = cfg, tasks
        self.held_out = needs_held_out(cfg.objective)
        self._built: dict[str, Task] = {}
        self._truncations = cfg.steps // cfg.truncation

    @property
    def truncations(self) -> int:
        """Meta-steps of the episode whose optimizees :meth:`inners` made last."""
        return self._truncations

    def horizon_of(self, episode: int) -> int:
        """The number of steps of ``episode``: drawn from ``horizons``, or ``steps``."""
        cfg = self.cfg
        if not cfg.horizons:
            return cfg.steps
        return cfg.horizons[
            int(torch.randint(len(cfg.horizons), (), generator=generator(cfg.seed, "horizon", episode)))
        ]

    def grad_scale_of(self, episode: int, slot: int) -> float:
        """The gradient factor of ``slot`` in ``episode``: drawn from ``grad_scales``, or 1."""
        scales = self.cfg.grad_scales
        if not scales:
            return 1.0
        g = generator(self.cfg.seed, "grad_scale", episode, slot)
        return float(scales[int(torch.randint(len(scales), (), generator=g))])

    def param_scales_of(self, episode: int, slot: int, layers: int) -> list[float]:
        """The weight factors of the ``layers`` layers of ``slot`` in ``episode``: drawn from ``param_scales``, or 1."""
        scales = self.cfg.param_scales
        if not scales:
            return [1.0] * layers
        g = generator(self.cfg.seed, "param_scale", episode, slot)
        return [float(scales[int(i)]) for i in torch.randint(len(scales), (layers,), generator=g)]

    def task_of(self, episode: int, slot: int) -> tuple[Task, int]:
        """The task of ``slot`` in ``episode`` and its plain-step offset."""
        cfg = self.cfg
        g = generator(cfg.seed, "family", episode, slot)
        if cfg.task_sampling == "random":
            member = int(torch.randint(len(cfg.tasks), (), generator=g))
        else:
            member = slot % len(cfg.tasks)
        choices = cfg.tasks[member].choices
        drawn = {key: values[int(torch.randint(len(values), (), generator=g))] for key, values in choices.items()}
        offset = int(torch.randint(cfg.start_offset + 1, (), generator=g)) if cfg.start_offset else 0
        if not drawn:
            return self.tasks[member], offset
        base = self.tasks[member]
        options = {**cfg.tasks[member].options, **drawn}
        key = repr((cfg.tasks[member].name, sorted(options.items())))
        if key not in self._built:
            self._built[key] = make_task(cfg.tasks[member].name, device=base.device, dtype=base.dtype, **options)
        return self._built[key], offset

    def inners(
        self,
        episode: int,
        rule: LearnedRule,
        slots: Sequence[int] | None = None,
        advance: Callable[[LearnedRule, Sequence[InnerState], Sequence[int]], None] | None = None,
    ) -> list[InnerState]:
        """The optimizees of ``episode``.

        Args:
            episode: the episode.
            rule: the live rule (the start offsets' plain steps are its).
            slots: the meta-batch slots to build (default all; a rank of a data-parallel run builds its share, the
                same optimizees as a single process builds for those slots).
            advance: takes the start offsets' plain steps, ``(rule, optimizees, counts)`` (an estimator's
                :meth:`~metaopt.outer.Estimator.advance`); default one optimizee after another.
        """
        cfg = self.cfg
        inners, offsets = [], []
        for slot in range(cfg.meta_batch) if slots is None else slots:
            task, offset = self.task_of(episode, slot)
            inner = start_episode(task, train_seed(episode, slot, cfg.meta_batch), rule, held_out=self.held_out)
            if self.cfg.param_scales:
                layers = len(reparameterizable_layers(inner.model))
                reparameterize_weights(inner, self.param_scales_of(episode, slot, layers))
            scale = self.grad_scale_of(episode, slot)
            if scale != 1.0:
                rescale_gradients(inner, scale)
            inners.append(inner)
            offsets.append(offset)
        if advance is None:
            for inner, offset in zip(inners, offsets):
                if offset:
                    advance_one(inner, offset)
        else:
            advance(rule, inners, offsets)
        self._truncations = self.horizon_of(episode) // cfg.truncation
        return inners


class DatasetWindows:
    """``meta_batch`` dataset windows per episode, one truncation each; optionally refreshed on-policy.

    Args:
        cfg: the configuration (``targets``, ``truncation``, ``warm_start``, ``on_policy_every``, ``seed``).
        device: where the windows' tasks are built.
        dtype: their dtype.

    Raises:
        ValueError: the dataset's window length is not the truncation.
    """

    truncations = 1
    """Meta-steps per episode."""

    def __init__(self, cfg: TrainConfig, device: torch.device, dtype: torch.dtype):
        assert cfg.targets is not None
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.dataset = TargetDataset(cfg.targets)
        if self.dataset.window != cfg.truncation:
            raise ValueError(
                f"the targets in {cfg.targets} have windows of T = {self.dataset.window} steps but truncation is "
                f"{cfg.truncation}; set truncation={self.dataset.window}"
            )
        self._tasks: dict[str, Task] = {}

    def picks(self, episode: int) -> list[int]:
        """Indices of the windows of ``episode`` (seeded by the run's seed and the episode number)."""
        g = generator(self.cfg.seed, "windows", episode)
        return torch.randint(len(self.dataset), (self.cfg.meta_batch,), generator=g).tolist()

    def refresh_due(self, episode: int) -> bool:
        """Whether ``episode`` starts with an on-policy refresh of its windows."""
        every = self.cfg.on_policy_every
        return bool(every) and (episode + 1) % every == 0

    def inners(self, picks: list[int], rule: LearnedRule, on_policy: dict[int, Any]) -> list[InnerState]:
        """The optimizees at the picked windows (with their on-policy targets where ``on_policy`` has some)."""
        inners = []
        for index in picks:
            window = self.dataset[index]
            if index in on_policy:
                window = dataclasses.replace(window, targets=on_policy[index])
            iterates = self.dataset.iterates_of(window)
            inner = start_window(self.task_of(window), window, rule, iterates, warm=self.cfg.warm_start)
            inner.context["teacher"] = iterates[window.t : window.t + window.window + 1]  # the teacher objective's
            inners.append(inner)
        return inners

    def refresh(self, indices: list[int], rule: LearnedRule) -> tuple[dict[int, Tensor], int]:
        """On-policy targets of the windows ``indices``: ``({index: targets (T + 1, P)}, windows left unchanged)``."""
        refreshed: dict[int, Tensor] = {}
        for index in indices:
            window = self.dataset[index]
            iterates = self.dataset.iterates_of(window)
            targets = on_policy_targets(self.task_of(window), window, rule, iterates, self.cfg.warm_start,
                                        self.dataset.dss_config())  # fmt: skip
            if targets is not None:
                refreshed[index] = targets
        return refreshed, len(indices) - len(refreshed)

    def task_of(self, window: TargetWindow) -> Task:
        """The task a window lives in, built once per spec."""
        key = repr(window.task)
        if key not in self._tasks:
            self._tasks[key] = task_from_spec(window.task, device=self.device, dtype=self.dtype)
        return self._tasks[key]


def on_policy_targets(
    task: Task, window: TargetWindow, rule: LearnedRule, iterates: Tensor, warm: bool, dss: DSSConfig
) -> Tensor | None:
    """A geodesic from theta_t to where the learned optimizer gets in T steps, re-spaced into ``(T + 1, P)`` points.

    None when that end lies above the window's level set or DSS does not connect it (the window keeps its targets).
    """
    inner = start_window(task, window, rule, iterates, warm=warm)
    fit(inner.task, model=inner.model, optimizer=inner.optimizer, batches=inner.batches, steps=window.window,
        evaluate=False)  # fmt: skip
    space = ParamSpace.from_task(inner.task)
    end = space.flatten(inner.model)
    if space.eval_loss(end) > window.level:
        return None
    string = connect(space, window.start.to(end), end, window.level, dss)
    return string.resample(window.window + 1).cpu() if string.connected else None
