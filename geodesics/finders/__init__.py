"""Path finders: connect two models inside a level set of the loss, each one module behind one interface.

``connect(space, a, b, threshold, DSSConfig(method=name))`` checks the endpoints and runs the finder registered as
``name`` (:class:`~geodesics.finders.base.PathFinder`). The built-in ones are registered here: ``greedy`` (DSS paper,
Algorithm 1, breadth-first) and ``constrained`` (Appendix A). They share their helpers from
:mod:`geodesics.finders.common`. To add one: write a module with a function of the ``PathFinder`` signature and add
its line below (or call :func:`register_finder` from your own code before building the ``DSSConfig``).
"""

from geodesics.finders.base import (
    DSSConfig,
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

__all__ = [
    "DSSConfig",
    "Pair",
    "PathFinder",
    "connect",
    "connect_many",
    "get_finder",
    "list_finders",
    "register_finder",
    "takes_profiles",
]

register_finder("greedy", connect_greedy, level_profiles=True)
register_finder("constrained", connect_constrained, level_profiles=True)
register_finder("neb", connect_neb)
register_finder("bezier", connect_bezier)
register_finder("polychain", connect_polychain)
