"""Optimizees in the middle of training and their differentiable unrolls.

:mod:`~metaopt.inner.unroll` holds the optimizee and the unroll, :mod:`~metaopt.inner.windows` the optimizees that
start inside a base run's window.
"""

from metaopt.inner.unroll import InnerState, Trajectory, advance, start_episode, unroll
from metaopt.inner.windows import batches_from, start_window, warm_state, warm_up

__all__ = [
    "InnerState",
    "Trajectory",
    "advance",
    "batches_from",
    "start_episode",
    "start_window",
    "unroll",
    "warm_state",
    "warm_up",
]
