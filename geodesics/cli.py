"""The ``geodesics`` command line: ``geodesics COMMAND [CONFIG] [key=value ...]`` (``geodesics COMMAND --help``).

Also ``python -m geodesics COMMAND ...`` (``geodesics/__main__.py``), the form ``torchrun`` launches.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from envs.tooling.cli import Command, main_for
from geodesics.commands import (
    ComparePathsConfig,
    ConnectConfig,
    DisconnectionConfig,
    PlotConfig,
    SweepConfig,
    run_compare_paths,
    run_connect,
    run_disconnection,
    run_plot,
    run_sweep,
)

__all__ = ["COMMANDS", "main"]

COMMANDS = [
    Command(
        "connect",
        ConnectConfig,
        run_connect,
        "connect two trained models with Dynamic String Sampling",
        default_config="geodesics/connect/poly_cubic.yaml",
    ),
    Command(
        "sweep",
        SweepConfig,
        run_sweep,
        "normalized length and beads against the threshold (paper Figure 1); resumable",
        default_config="geodesics/sweep/poly_cubic.yaml",
    ),
    Command(
        "compare-paths",
        ComparePathsConfig,
        run_compare_paths,
        "every path finder (DSS, NEB, Bezier, polychain) on the same endpoints and budgets; resumable",
        default_config="geodesics/compare_paths/poly_cubic.yaml",
    ),
    Command("plot", PlotConfig, run_plot, "PCA views and snapshots of a string (Appendix D)", positional="run"),
    Command(
        "disconnection",
        DisconnectionConfig,
        run_disconnection,
        "the Appendix E check: a permuted pair that must not connect, and a control that does",
        default_config="geodesics/disconnection.yaml",
    ),
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geodesics`` console script."""
    return main_for("geodesics", "Level-set geodesics by Dynamic String Sampling.", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
