"""Outer trainers behind one interface (:class:`Estimator`).

Given the rule and a batch of optimizees, an estimator returns the meta-gradient and metrics. Members:
``truncated_backprop`` (:mod:`~metaopt.outer.truncated_backprop`). A new estimator is one module and one
``register_estimator`` line below.
"""

from metaopt.outer.base import Estimator, EstimatorSetup, MetaGradient, NoOptions
from metaopt.outer.registry import (
    estimator_config,
    get_estimator_class,
    list_estimators,
    make_estimator,
    register_estimator,
)
from metaopt.outer.truncated_backprop import TruncatedBackprop

register_estimator("truncated_backprop", TruncatedBackprop)

__all__ = [
    "Estimator",
    "EstimatorSetup",
    "MetaGradient",
    "NoOptions",
    "TruncatedBackprop",
    "estimator_config",
    "get_estimator_class",
    "list_estimators",
    "make_estimator",
    "register_estimator",
]
