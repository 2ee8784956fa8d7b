"""The ``geodesics`` commands: each a typed config (inheriting ``envs.tooling.config.RunOptions``) and a ``run_*``.

``connect`` (two endpoints, one path), ``compare-paths`` (every path finder on the same endpoints), ``sweep``
(length and beads against the threshold, the DSS paper's Figure 1), ``disconnection`` (Appendix E) and ``plot``
(Appendix D figures of a saved string). ``geodesics.cli`` puts them on the command line; the engine (``geodesics``
and ``geodesics.finders``) never imports them.
"""

from geodesics.commands.compare_paths import ComparePathsConfig, run_compare_paths
from geodesics.commands.connect import ConnectConfig, run_connect
from geodesics.commands.disconnection import DisconnectionConfig, run_disconnection
from geodesics.commands.plot import PlotConfig, run_plot
from geodesics.commands.sweep import SweepConfig, run_sweep
from geodesics.commands.topology import TopologyConfig, run_topology

__all__ = [
    "ComparePathsConfig",
    "ConnectConfig",
    "DisconnectionConfig",
    "PlotConfig",
    "SweepConfig",
    "TopologyConfig",
    "run_compare_paths",
    "run_connect",
    "run_disconnection",
    "run_plot",
    "run_sweep",
    "run_topology",
]
