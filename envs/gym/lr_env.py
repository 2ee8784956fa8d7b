"""Learning-rate control as a Gymnasium environment: one observation and action shape for every task.

In the spirit of DACBench's step-size control benchmarks (Biedenkapp et al., 2020; Adriaensen et al., 2022): a base
optimizer trains the task's model, and the agent chooses its learning rate every few steps from summary statistics
of the training state. Unlike :class:`~envs.gym.OptimizeeEnv`, whose spaces have the task's parameter count, the
spaces here are fixed and bounded, so one agent can be trained across tasks and ``gymnasium.make_vec`` works.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from typing_extensions import override

from envs.task import Task
from envs.task.registry import make_task
from envs.training.optim import make_optimizer

__all__ = ["FEATURES", "LRControlEnv"]

FEATURES = (
    "log10_loss",
    "log10_loss_change",
    "log10_grad_norm",
    "log10_param_norm",
    "log10_update_ratio",
    "lr_action",
    "progress",
    "share_of_rising_steps",
)
"""The observation's entries, in order (see :class:`LRControlEnv`)."""

BOUND = 10.0
"""Every feature is clipped to [-BOUND, BOUND]."""
LOSS_CAP = 1e6
"""A loss above this (or NaN) ends the episode; the reward is then ``-LOSS_CAP``."""


class LRControlEnv(gym.Env[np.ndarray, np.ndarray]):
    """Choose the learning rate of a base optimizer on a task, every ``steps_per_action`` training steps.

    ## Description

    Each episode trains a freshly initialised model of a task with a base optimizer (Adam by default). At every
    environment step the agent sets the learning rate; the optimizer then takes ``steps_per_action`` steps on the
    task's training batches with it. The optimizer's state (moments) carries over between actions.

    ## Action Space

    ``Box(-1, 1, (1,), float32)``: the learning rate on a log scale, ``lr = 10 ** (lo + (a + 1) / 2 * (hi - lo))``
    with ``(lo, hi) = log10(lr_range)`` (``lr_range = (1e-4, 1)`` by default).

    ## Observation Space

    ``Box(-10, 10, (8,), float32)``, each entry clipped to the box (names in ``envs.gym.lr_env.FEATURES``): log10 of
    the mean training loss over the last action's steps; its change since the previous action; log10 of the last
    gradient norm; log10 of the parameter norm; log10 of the last action's update norm over the parameter norm;
    the last action (``0`` at reset); training progress ``steps / horizon`` (clipped to 1); the share of the last
    action's steps whose loss rose.

    ## Rewards

    The negative mean training loss over the action's steps (``-LOSS_CAP`` if it diverged).

    ## Starting State

    ``reset(seed=s)`` draws a run seed from ``self.np_random`` (``info["run_seed"]``); the model is
    ``task.instance(run_seed).init_model(run_seed)`` and the batches ``task.batches(run_seed)``: same seed, same
    episode for the same actions, bit for bit on CPU.

    ## Episode End

    Truncation after ``max_episode_steps`` (50 by default); termination when the loss exceeds ``LOSS_CAP`` or is
    NaN (``info["diverged"]``).

    ## Arguments

    ``task``: name or ``Task``; ``optimizer``: a registry name (``envs.list_optimizers()``); ``lr_range``: the
    learning rates the action spans; ``steps_per_action``; ``horizon``: the step count the progress feature is
    relative to (default ``steps_per_action * 50``); ``device``, ``dtype``; other keywords are task options.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        task: str | Task = "quadratic",
        *,
        optimizer: str = "adam",
        lr_range: tuple[float, float] = (1e-4, 1.0),
        steps_per_action: int = 10,
        horizon: int | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        **task_options: Any,
    ):
        lo, hi = (float(v) for v in lr_range)
        if not (0 < lo < hi and math.isfinite(hi)):
            raise ValueError(f"lr_range must be two finite learning rates 0 < low < high, got {lr_range}")
        if isinstance(steps_per_action, bool) or int(steps_per_action) != steps_per_action or steps_per_action < 1:
            raise ValueError(f"steps_per_action must be an integer >= 1, got {steps_per_action!r}")
        if horizon is not None and (isinstance(horizon, bool) or int(horizon) != horizon or horizon < steps_per_action):
            raise ValueError(
                f"horizon must be an integer >= steps_per_action ({steps_per_action}), or None for "
                f"{50 * int(steps_per_action)} steps (50 actions), got {horizon!r}"
            )
        self.task = task if isinstance(task, Task) else make_task(task, device=device, dtype=dtype, **task_options)
        self.optimizer_name = optimizer
        make_optimizer(optimizer, [torch.zeros(1, requires_grad=True)], lr=lo)  # unknown names fail here
        self.log_lr_range = (math.log10(lo), math.log10(hi))
        self.steps_per_action = int(steps_per_action)
        self.horizon = int(horizon) if horizon is not None else self.steps_per_action * 50
        self.observation_space = spaces.Box(-BOUND, BOUND, shape=(len(FEATURES),), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._model: torch.nn.Module | None = None

    def learning_rate(self, action: np.ndarray | float) -> float:
        """The learning rate an action sets."""
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        lo, hi = self.log_lr_range
        return 10.0 ** (lo + (a + 1.0) / 2.0 * (hi - lo))

    @override
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        run_seed = int(self.np_random.integers(0, 2**31 - 1))
        problem = self.task.instance(run_seed)
        self._problem = problem
        self._model = problem.init_model(run_seed)
        self._params = [p for p in self._model.parameters() if p.requires_grad]
        self._optimizer = make_optimizer(self.optimizer_name, self._params, lr=self.learning_rate(0.0))
        self._batches = problem.batches(run_seed)
        self._steps = 0
        loss, grad_norm = self._loss_and_grad()
        self._last_log_loss = _log10(loss)
        features = [self._last_log_loss, 0.0, _log10(grad_norm), _log10(self._param_norm()), -BOUND, 0.0, 0.0, 0.0]
        return self._observation(features), {"run_seed": run_seed, "loss": loss}

    @override
    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._model is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (1,) or not np.isfinite(a).all() or abs(a[0]) > 1:
            raise ValueError(f"action must be one finite number in [-1, 1] (the log learning rate), got {action!r}")
        lr = self.learning_rate(a)
        for group in self._optimizer.param_groups:
            group["lr"] = lr
        start = [p.detach().clone() for p in self._params]
        losses: list[float] = []
        grad_norm = math.nan
        for _ in range(self.steps_per_action):
            loss, grad_norm = self._loss_and_grad()
            losses.append(loss)
            if not math.isfinite(loss) or loss > LOSS_CAP:
                break
            self._optimizer.step()
            self._steps += 1
        mean = float(np.mean(losses))
        diverged = not math.isfinite(mean) or mean > LOSS_CAP
        moved = math.sqrt(sum(float((p.detach() - s).double().pow(2).sum()) for p, s in zip(self._params, start)))
        param_norm = self._param_norm()
        log_loss = _log10(mean)
        rising = float(np.mean([b > a for a, b in zip(losses, losses[1:])])) if len(losses) > 1 else 0.0
        features = [
            log_loss,
            log_loss - self._last_log_loss,
            _log10(grad_norm),
            _log10(param_norm),
            _log10(moved / param_norm) if param_norm > 0 else -BOUND,
            float(a[0]),
            min(self._steps / self.horizon, 1.0),
            rising,
        ]
        self._last_log_loss = log_loss
        reward = -LOSS_CAP if diverged else -mean
        info = {"loss": mean, "lr": lr, "diverged": diverged, "steps": self._steps}
        return self._observation(features), reward, diverged, False, info

    def _loss_and_grad(self) -> tuple[float, float]:
        assert self._model is not None
        self._optimizer.zero_grad(set_to_none=True)
        loss = self._problem.loss(self._model, next(self._batches))
        loss.backward()
        norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in self._params if p.grad is not None))
        return float(loss.detach()), norm

    def _param_norm(self) -> float:
        return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in self._params))

    @staticmethod
    def _observation(features: list[float]) -> np.ndarray:
        values = np.nan_to_num(np.asarray(features, dtype=np.float64), nan=BOUND, posinf=BOUND, neginf=-BOUND)
        return np.clip(values, -BOUND, BOUND).astype(np.float32)


def _log10(value: float) -> float:
    if not math.isfinite(value):
        return BOUND
    return math.log10(value) if value > 0 else -BOUND
