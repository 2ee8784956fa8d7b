"""Outer trainers behind one interface (:class:`Estimator`).

Given the rule and a batch of optimizees, an estimator returns the meta-gradient and metrics. Members:
``truncated_backprop`` (:mod:`~metaopt.outer.truncated_backprop`), ``es`` and ``pes`` (antithetic truncated and
persistent evolution strategies, :mod:`~metaopt.outer.es`). A new estimator is one module and one
``register_estimator`` line below.
"""

from metaopt.outer.base import Estimator, EstimatorSetup, MetaGradient, NoOptions
from metaopt.outer.es import ESConfig, PersistentES, TruncatedES
from metaopt.outer.registry import (
    estimator_config,
    get_estimator_class,
    list_estimators,
    make_estimator,
    register_estimator,
)
from metaopt.outer.truncated_backprop import TruncatedBackprop

register_estimator("truncated_backprop", TruncatedBackprop)
register_estimator("es", TruncatedES)
register_estimator("pes", PersistentES)

__all__ = [
    "ESConfig",
    "Estimator",
    "EstimatorSetup",
    "MetaGradient",
    "NoOptions",
    "PersistentES",
    "TruncatedBackprop",
    "TruncatedES",
    "estimator_config",
    "get_estimator_class",
    "list_estimators",
    "make_estimator",
    "register_estimator",
]
