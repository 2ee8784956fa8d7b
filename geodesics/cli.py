"""The ``geodesics`` command line: ``geodesics COMMAND [CONFIG] [key=value ...]`` (``geodesics COMMAND --help``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from envs.cli import Command, main_for
from geodesics.connect_run import ConnectConfig, run_connect

__all__ = ["COMMANDS", "main"]

COMMANDS = [
    Command(
        "connect",
        ConnectConfig,
        run_connect,
        "connect two trained models with Dynamic String Sampling",
        default_config="geodesics/connect/poly_cubic.yaml",
    ),  # fmt: skip
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geodesics`` console script."""
    return main_for("geodesics", "Level-set geodesics by Dynamic String Sampling.", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
