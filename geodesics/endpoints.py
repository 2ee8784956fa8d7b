"""Endpoints of a DSS run from a config: trained to the threshold from a seed, or loaded from a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from envs.task import Task
from geodesics.space import ParamSpace
from geodesics.train import train_to_threshold

__all__ = ["EndpointConfig", "load_endpoint", "make_endpoint"]


@dataclass
class EndpointConfig:
    """Where an endpoint comes from."""

    seed: int = 0
    """Train a fresh model from this seed until its evaluation loss is below the threshold."""
    checkpoint: str | None = None
    """Load instead: a ``metaopt fit`` checkpoint (``checkpoints/final.pt``) or a saved flat vector (``(P,)``)."""
    max_steps: int = 0
    """Training step budget (0: five times the task's recipe steps)."""


def load_endpoint(space: ParamSpace, path: str | Path) -> Tensor:
    """A flat vector from a ``metaopt fit`` checkpoint or a saved tensor; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"endpoint checkpoint {path} does not exist; train one with `metaopt fit` or use seed=")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ValueError(f"endpoint checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from None
    if isinstance(state, Tensor):
        return space.check(state)
    if isinstance(state, dict) and "state_dict" in state:
        name = (state.get("spec") or {}).get("name")
        if name is not None and name != space.task.name:
            raise ValueError(
                f"endpoint checkpoint {path} is a {name!r} model, but the run's task is {space.task.name!r}"
            )
        model = space.task.init_model(0)
        try:
            model.load_state_dict(state["state_dict"])
        except RuntimeError as exc:
            raise ValueError(f"endpoint checkpoint {path} does not fit the task's model: {exc}") from None
        return space.flatten(model)
    raise ValueError(f"endpoint checkpoint {path} holds neither a fit checkpoint nor a parameter vector")


def make_endpoint(space: ParamSpace, task: Task, config: EndpointConfig, threshold: float) -> Tensor:
    """The endpoint ``config`` describes, as a flat vector on the space's device."""
    if config.checkpoint:
        return load_endpoint(space, config.checkpoint)
    return space.check(train_to_threshold(task, config.seed, threshold, max_steps=config.max_steps or None))
