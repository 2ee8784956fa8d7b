"""Path finders: connect two models inside a level set of the loss, each one module behind one interface.

``connect(space, a, b, threshold, DSSConfig(finder=FinderChoice(name, options)))`` checks the endpoints and runs the
finder registered as ``name`` (:class:`~geodesics.finders.base.PathFinder`) with its own options. The built-in ones
are registered here: ``greedy`` (DSS paper, Algorithm 1, breadth-first), ``constrained`` (Appendix A), ``neb``
(AutoNEB), ``bezier`` and ``polychain`` (curves trained by sampling t), each with the options dataclass of
:mod:`geodesics.finders.settings`. They share their helpers from :mod:`geodesics.finders.common`. To add one: write a
module with a function of the ``PathFinder`` signature and its options' dataclass, and add its line below (or call
:func:`register_finder` from your own module, named in a config's ``imports:``).
"""

from geodesics.finders.base import (
    DSSConfig,
    FinderChoice,
    Pair,
    PathFinder,
    get_finder,
    list_finders,
    register_finder,
    takes_profiles,
)
from geodesics.finders.constrained import connect_constrained
from geodesics.finders.curves import connect_bezier, connect_polychain
from geodesics.finders.dispatch import connect, connect_many
from geodesics.finders.greedy import connect_greedy
from geodesics.finders.neb import connect_neb
from geodesics.finders.settings import ConstrainedConfig, GreedyConfig, NEBConfig, TrainedCurveConfig

__all__ = [
    "ConstrainedConfig",
    "DSSConfig",
    "FinderChoice",
    "GreedyConfig",
    "NEBConfig",
    "Pair",
    "PathFinder",
    "connect",
    "connect_many",
    "get_finder",
    "list_finders",
    "register_finder",
    "takes_profiles",
    "TrainedCurveConfig",
]

register_finder("greedy", connect_greedy, config=GreedyConfig, level_profiles=True)
register_finder("constrained", connect_constrained, config=ConstrainedConfig, level_profiles=True)
register_finder("neb", connect_neb, config=NEBConfig)
register_finder("bezier", connect_bezier, config=TrainedCurveConfig)
register_finder("polychain", connect_polychain, config=TrainedCurveConfig)
