"""Estimators by name: ``metaopt train estimator.name=NAME estimator.options={...}`` finds its class here.

A new estimator is one module defining an :class:`~metaopt.outer.base.Estimator` subclass and one line
``register_estimator("name", EstimatorClass)`` (the package's own register in :mod:`metaopt.outer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envs.tooling.registry import Registry
from metaopt.outer.base import Estimator, EstimatorSetup

__all__ = [
    "ESTIMATORS",
    "estimator_config",
    "get_estimator_class",
    "list_estimators",
    "make_estimator",
    "register_estimator",
]

ESTIMATORS: Registry[type[Estimator]] = Registry("estimator", Estimator)
"""The registered estimators."""


def register_estimator(name: str, cls: type[Estimator]) -> None:
    """Make ``cls`` the estimator called ``name`` (``cls.Config`` must be a dataclass)."""
    ESTIMATORS.register(name, cls)


def list_estimators() -> list[str]:
    """Names of the registered estimators."""
    return ESTIMATORS.names()


def get_estimator_class(name: str) -> type[Estimator]:
    """The estimator class registered as ``name``; a clear error naming the valid estimators otherwise."""
    return ESTIMATORS.get(name)


def estimator_config(name: str, options: Mapping[str, Any]) -> Any:
    """The ``Config`` of estimator ``name`` from a mapping of its fields (naming the valid options otherwise)."""
    return ESTIMATORS.config(name, options)


def make_estimator(name: str, options: Mapping[str, Any], setup: EstimatorSetup) -> Estimator:
    """A new estimator ``name`` with ``options`` for the loop's ``setup``."""
    return ESTIMATORS.get(name)(ESTIMATORS.config(name, options), setup)
