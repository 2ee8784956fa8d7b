"""Training a task's model as a Gymnasium environment: the agent is the optimizer."""

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

__all__ = ["OptimizeeEnv"]


class OptimizeeEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Optimize the parameters of a task's model, one update per step.

    ## Description

    Each episode trains a freshly initialised model of a task (see ``envs.list_tasks()``). The agent plays the role
    of the optimizer: it sees the current parameters, the gradient of the training loss on the current batch and the
    loss itself, and answers with the update to add to the parameters. Any ``torch.optim`` optimizer, and the learned
    optimizer of ``metaopt``, acts as a policy through ``envs.OptimizerPolicy``.

    ## Action Space

    ``Box(-1, 1, (P,), float64)``: the update added to the flattened parameter vector is
    ``action_scale * action`` (P is ``task.num_params``; ``action_scale`` is 1 by default, a power of two keeps the
    scaling exact). Float64 so that an update computed from float32 parameters is represented exactly. An action of
    another shape, outside the box, or with NaN or infinite entries raises ``ValueError`` and changes nothing.

    ## Observation Space

    ``Dict`` with ``"params"`` ``Box(-M, M, (P,), dtype)``, the flattened parameters (in ``model.parameters()``
    order); ``"grad"`` of the same shape, the gradient of the training loss at those parameters on the current
    batch; ``"loss"`` ``Box(-M, M, (1,), dtype)``, that loss. ``dtype`` is the task's (float32 by default) and M its
    largest finite value, so every observation is inside the space (a diverged run's last observation has its
    non-finite entries replaced by -M or M). Its size is the task's parameter count:
    for one observation shape across tasks use the ``metaopt/<Name>-LR-v0`` family (``envs.gym.LRControlEnv``).

    ## Rewards

    The negative training loss after the step (on the batch the next gradient is taken on); when the loss is NaN or
    infinite the episode terminates with reward ``-M``.

    ## Starting State

    ``reset(seed=s)`` draws a run seed from ``self.np_random`` (reported as ``info["run_seed"]``); the model is
    ``task.instance(run_seed).init_model(run_seed)`` and the batches ``task.batches(run_seed)``, so the same seed gives
    the same episode, bit for bit on CPU.

    ## Episode End

    Truncation after ``max_episode_steps`` (100 unless ``gymnasium.make(..., max_episode_steps=N)`` says otherwise);
    termination when the loss becomes NaN or infinite (``info["diverged"]`` is then True).

    ## Arguments

    ``task``: a task name or a ``Task``; ``action_scale``: the largest update per coordinate; ``device``, ``dtype``:
    as for ``envs.make_task``; any other keyword is a task option, e.g.
    ``gymnasium.make("metaopt/DigitsMLP-v0", width=40)``.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        task: str | Task = "quadratic",
        *,
        action_scale: float = 1.0,
        device: str = "cpu",
        dtype: str = "float32",
        **task_options: Any,
    ):
        if not (math.isfinite(action_scale) and action_scale > 0):
            raise ValueError(f"action_scale must be a finite number > 0, got {action_scale}")
        self.task = task if isinstance(task, Task) else make_task(task, device=device, dtype=dtype, **task_options)
        self.action_scale = float(action_scale)
        size = self.task.num_params
        self._np_dtype = np.float64 if self.task.dtype == torch.float64 else np.float32
        self.bound = float(np.finfo(self._np_dtype).max)
        self.observation_space = spaces.Dict(  # type: ignore[assignment]  # gymnasium types Dict as Space[dict[str, Any]]
            {"params": self._box(size), "grad": self._box(size), "loss": self._box(1)}
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(size,), dtype=np.float64)
        self._model: torch.nn.Module | None = None

    def _bounded(self, values: np.ndarray) -> np.ndarray:
        """In the observation dtype; non-finite entries (a diverged run's last observation) become -M or M."""
        values = values.astype(self._np_dtype, copy=False)
        if np.isfinite(values).all():
            return values
        return np.nan_to_num(values, nan=self.bound, posinf=self.bound, neginf=-self.bound)

    def _box(self, size: int) -> spaces.Box:
        return spaces.Box(-self.bound, self.bound, shape=(size,), dtype=self._np_dtype)

    @override
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        run_seed = int(self.np_random.integers(0, 2**31 - 1))
        self._problem = self.task.instance(run_seed)
        self._model = self._problem.init_model(run_seed)
        self._params = [p for p in self._model.parameters() if p.requires_grad]
        self._batches = self._problem.batches(run_seed)
        observation, loss = self._observe()
        return observation, {"run_seed": run_seed, "loss": loss}

    @override
    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._model is None:
            raise RuntimeError("call reset() before step()")
        update = self._check_action(action)
        with torch.no_grad():
            offset = 0
            for p in self._params:
                delta = torch.from_numpy(update[offset : offset + p.numel()]).to(p.device).view_as(p)
                p.copy_((p.double() + delta).to(p.dtype))
                offset += p.numel()
        observation, loss = self._observe()
        diverged = not math.isfinite(loss)
        reward = -self.bound if diverged else -loss
        return observation, reward, diverged, False, {"loss": loss, "diverged": diverged}

    def _check_action(self, action: np.ndarray) -> np.ndarray:
        update = np.asarray(action, dtype=np.float64)
        expected = self.action_space.shape
        if update.shape != expected:
            raise ValueError(
                f"action has shape {update.shape}, expected {expected}: one update per parameter of task "
                f"{self.task.name!r} (flattened in model.parameters() order)"
            )
        if not np.all(np.isfinite(update)):
            bad = int(np.size(update) - np.isfinite(update).sum())
            raise ValueError(f"action has {bad} NaN or infinite entries; an update must be finite")
        outside = int((np.abs(update) > 1).sum())
        if outside:
            raise ValueError(
                f"action has {outside} entries outside [-1, 1]: the update is action_scale * action "
                f"(action_scale = {self.action_scale:g}); make the env with a larger action_scale"
            )
        return update * self.action_scale

    def _observe(self) -> tuple[dict[str, np.ndarray], float]:
        assert self._model is not None
        for p in self._params:
            p.grad = None
        loss = self._problem.loss(self._model, next(self._batches))
        loss.backward()
        grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self._params])
        params = torch.cat([p.detach().reshape(-1) for p in self._params])
        value = float(loss.detach())
        observation = {
            "params": self._bounded(params.detach().cpu().numpy()),
            "grad": self._bounded(grad.cpu().numpy()),
            "loss": self._bounded(np.array([value])),
        }
        return observation, value
