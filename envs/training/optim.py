"""Optimizers by name: one registry for task recipes, the comparison harness and the gymnasium adapter.

Built in: ``sgd``, ``momentum`` (SGD, 0.9), ``nesterov`` (SGD, 0.9, Nesterov), ``rmsprop``, ``adam``, ``adamw``,
``adamw_cosine`` (AdamW with a cosine schedule over the run's horizon, :mod:`envs.training.schedules`) and ``muon``
(Muon on weight matrices, AdamW on the rest, one learning rate, :mod:`envs.training.muon`).
Other optimizers join with :func:`register_optimizer` (the learned optimizer of :mod:`metaopt` registers itself as
``learned``). A factory may be given as a ``"module:attribute"`` string, imported on first use: the built-ins are
``torch.optim`` classes named so, and importing this module (or ``envs``, or ``metaopt``) does not import torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envs.lazy import resolve
from envs.tooling.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = [
    "OPTIMIZERS", "OptimizerSpec", "get_optimizer_spec", "list_optimizers", "make_optimizer", "register_optimizer"
]  # fmt: skip

OptimizerFactory = Callable[..., "torch.optim.Optimizer"]


@dataclass(frozen=True)
class OptimizerSpec:
    """A named optimizer: a class (or factory taking ``params, lr=..., **options``) and its fixed options."""

    name: str
    factory: OptimizerFactory | str
    """The class or factory; a ``"module:attribute"`` string until first use (:func:`get_optimizer_spec` resolves
    it)."""
    options: dict[str, Any] = field(default_factory=dict)
    tunable_lr: bool = True
    """Whether the comparison harness tunes its learning rate (a learned optimizer has none to tune)."""
    horizon_option: str | None = None
    """Constructor option that receives a run's number of steps (a schedule over the horizon); None: none."""

    def with_horizon(self, options: dict[str, Any], steps: int) -> dict[str, Any]:
        """``options`` with the run's horizon added under :attr:`horizon_option` (unless the options set it)."""
        if self.horizon_option is None or self.horizon_option in options:
            return options
        return {self.horizon_option: steps, **options}


OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer")
"""The registered optimizers (entries: :class:`OptimizerSpec`; flags none, the spec holds what callers need)."""


def register_optimizer(
    name: str,
    factory: OptimizerFactory | str,
    *,
    tunable_lr: bool = True,
    horizon_option: str | None = None,
    **options: Any,
) -> None:
    """Register ``factory`` as ``name``; ``options`` are passed to it on every construction (overridable).

    ``factory`` may be a ``"module:attribute"`` string, imported when the optimizer is first looked up;
    ``horizon_option`` names the constructor option that receives a run's number of steps (a schedule's horizon).

    Raises:
        ValueError: ``name`` is taken by another optimizer.
    """
    OPTIMIZERS.register(name, OptimizerSpec(name, factory, dict(options), tunable_lr, horizon_option))


def list_optimizers() -> list[str]:
    """Names of the registered optimizers."""
    return OPTIMIZERS.names()


def get_optimizer_spec(name: str) -> OptimizerSpec:
    """The spec registered as ``name``, its factory imported; a clear error listing the valid names otherwise."""
    spec = OPTIMIZERS.get(name)
    if isinstance(spec.factory, str):
        spec = dataclasses.replace(spec, factory=resolve(spec.factory))
    return spec


def make_optimizer(
    name: str, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float | None = None, **overrides: Any
) -> torch.optim.Optimizer:
    """Construct the optimizer registered as ``name`` over ``params``.

    Args:
        name: registry name.
        params: parameters or parameter groups.
        lr: learning rate (omitted for optimizers without one).
        **overrides: replace registered options.
    """
    spec = get_optimizer_spec(name)
    kwargs = {**spec.options, **overrides}
    if lr is not None:
        kwargs["lr"] = lr
    return spec.factory(params, **kwargs)  # type: ignore[operator]  # resolved by get_optimizer_spec


register_optimizer("sgd", "torch.optim:SGD")
register_optimizer("momentum", "torch.optim:SGD", momentum=0.9)
register_optimizer("nesterov", "torch.optim:SGD", momentum=0.9, nesterov=True)
register_optimizer("rmsprop", "torch.optim:RMSprop")
register_optimizer("adam", "torch.optim:Adam")
register_optimizer("adamw", "torch.optim:AdamW")
register_optimizer("adamw_cosine", "envs.training.schedules:AdamWCosine", horizon_option="total_steps")
register_optimizer("muon", "envs.training.muon:MuonAdamW")
