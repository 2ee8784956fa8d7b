"""The ``geodesics`` command line: ``geodesics COMMAND [CONFIG] [key=value ...]`` (``geodesics COMMAND --help``).

Also ``python -m geodesics COMMAND ...`` (``geodesics/__main__.py``), the form ``torchrun`` launches. Each command's
schema and function are ``"module:attribute"`` strings, imported only for the chosen command: ``geodesics --help``
does not import torch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from envs.tooling.cli import Command, main_for

__all__ = ["COMMANDS", "main"]

# Each schema and function as "module:attribute": importing them here would make `geodesics --help` import torch.
COMMANDS = [
    Command(
        "connect",
        "geodesics.commands:ConnectConfig",
        "geodesics.commands:run_connect",
        "connect two trained models with Dynamic String Sampling",
        default_config="geodesics/connect/poly_cubic.yaml",
    ),
    Command(
        "sweep",
        "geodesics.commands:SweepConfig",
        "geodesics.commands:run_sweep",
        "normalized length and beads against the threshold (paper Figure 1); resumable",
        default_config="geodesics/sweep/poly_cubic.yaml",
    ),
    Command(
        "compare-paths",
        "geodesics.commands:ComparePathsConfig",
        "geodesics.commands:run_compare_paths",
        "every path finder (DSS, NEB, Bezier, polychain) on the same endpoints and budgets; resumable",
        default_config="geodesics/compare_paths/poly_cubic.yaml",
    ),
    Command(
        "plot",
        "geodesics.commands:PlotConfig",
        "geodesics.commands:run_plot",
        "PCA views and snapshots of a string (Appendix D)",
        positional="run",
    ),
    Command(
        "disconnection",
        "geodesics.commands:DisconnectionConfig",
        "geodesics.commands:run_disconnection",
        "the Appendix E check: a permuted pair that must not connect, and a control that does",
        default_config="geodesics/disconnection.yaml",
    ),
    Command(
        "topology",
        "geodesics.commands:TopologyConfig",
        "geodesics.commands:run_topology",
        "Section 2: sweeps over depth (linear nets) or hidden width (ReLU nets), one sub-run each; resumable",
        default_config="geodesics/topology/relu_width.yaml",
    ),
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geodesics`` console script."""
    return main_for("geodesics", "Level-set geodesics by Dynamic String Sampling.", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
