"""An adapter that lets any ``torch.optim`` optimizer act as the policy of an :class:`OptimizeeEnv`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.training.optim import make_optimizer

__all__ = ["OptimizerPolicy", "rollout"]


class OptimizerPolicy:
    """Turns observations into the update a torch optimizer would make.

    The policy keeps one flat parameter tensor mirroring the environment's parameters. Each call loads the observed
    parameters and gradient into it, lets the optimizer step, and returns the difference as the action. Optimizers
    that act coordinate by coordinate (SGD, momentum, RMSProp, Adam, the learned optimizer) behave exactly as they do
    on the model's own parameter tensors. Optimizers that need a closure (L-BFGS) are not supported.

    Args:
        optimizer: a registry name (see ``envs.list_optimizers()``) or a factory ``params -> torch.optim.Optimizer``.
        lr: learning rate when ``optimizer`` is a name.
        dtype: dtype of the mirrored parameters; match the environment's model (float32 by default).
        **options: optimizer options when ``optimizer`` is a name.
    """

    def __init__(
        self,
        optimizer: str | Callable[[list[torch.Tensor]], torch.optim.Optimizer],
        lr: float | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        **options: Any,
    ):
        if isinstance(optimizer, str):
            name = optimizer
            self._factory: Callable[[list[torch.Tensor]], torch.optim.Optimizer] = lambda params: make_optimizer(
                name, params, lr=lr, **options
            )
        else:
            self._factory = optimizer
        self.dtype = dtype
        self._theta: torch.Tensor | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    def reset(self) -> None:
        """Forget the optimizer state; the next call starts a new one (call at every episode start)."""
        self._theta = None
        self.optimizer = None

    def __call__(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The update the optimizer makes from ``observation`` (parameters and gradient), as a float64 action."""
        params = torch.as_tensor(observation["params"]).to(self.dtype)
        if self._theta is None or self._theta.shape != params.shape:
            self._theta = params.clone().requires_grad_(True)
            self.optimizer = self._factory([self._theta])
        assert self.optimizer is not None
        with torch.no_grad():
            self._theta.copy_(params)
        self._theta.grad = torch.as_tensor(observation["grad"]).to(self.dtype)
        before = self._theta.detach().double().clone()
        self.optimizer.step()
        return (self._theta.detach().double() - before).numpy()


def rollout(env: gym.Env, policy: OptimizerPolicy, seed: int, steps: int) -> list[float]:
    """Run one episode of at most ``steps`` steps; returns the training loss at every step (the reset's included).

    The policy's update is divided by the environment's ``action_scale`` (exact for a power of two).
    """
    policy.reset()
    scale = float(getattr(env.unwrapped, "action_scale", 1.0))  # the env adds action_scale * action
    observation, info = env.reset(seed=seed)
    losses = [float(info["loss"])]
    for _ in range(steps):
        observation, _, terminated, truncated, info = env.step(policy(observation) / scale)
        losses.append(float(info["loss"]))
        if terminated or truncated:
            break
    return losses
