"""The command-line shell shared by ``metaopt`` and ``geodesics``: ``PROG COMMAND [CONFIG] [key=value ...]``.

Each command is a typed config schema plus a function ``run(cfg) -> metrics``. This module parses the arguments,
loads the config (:func:`envs.tooling.config.load_config`), prints every option with its help for ``--help``, turns
bad input into one clear message (exit status 2) and leaves all the work to the command's function.

A command's schema and function may be given as ``"module:attribute"`` strings (:func:`envs.lazy.resolve`): only the
chosen command's are imported, so ``PROG --help`` lists the commands without importing torch or any command.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from envs.errors import ConfigError, DataNotFoundError, StorageError, TaskError
from envs.lazy import resolve
from envs.tooling.config import check_range, config_help, load_config

__all__ = ["Command", "intra_op_threads", "main_for"]


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (0: one, the measured default; None: leave torch's), then restore."""
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads or 1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class Command:
    """One subcommand: its schema, the function that runs it, and a one-line summary.

    ``schema_ref`` and ``run_ref`` are the objects or ``"module:attribute"`` strings naming them, imported when the
    command is chosen; :attr:`schema` and :attr:`run` are the objects.
    """

    name: str
    schema_ref: type | str
    run_ref: Callable[[Any], Any] | str
    summary: str
    default_config: str | None = None
    """Config used when none is given on the command line (a packaged path), or None to use the schema defaults."""
    positional: str | None = None
    """If set, the first argument is this key's value instead of a config file (``geodesics plot RUN``)."""
    example: str = ""
    """``key=value`` overrides shown in ``--help`` as the example (keys of ``schema``); empty: none shown."""

    @property
    def schema(self) -> type:
        """The config dataclass (imported on first use)."""
        schema: type = resolve(self.schema_ref)
        return schema

    @property
    def run(self) -> Callable[[Any], Any]:
        """The function ``run(cfg) -> metrics`` (imported on first use)."""
        run: Callable[[Any], Any] = resolve(self.run_ref)
        return run


def _entries_help(schema: type, config: str | None, overrides: Sequence[str]) -> str:
    """The options of the registered entries a command line picks (``rule.name=tiny``), for its ``--help``.

    The config is loaded as the command would load it; when it cannot be (a bad key), the schema's defaults are
    described instead: ``--help`` never fails on the rest of the command line.
    """
    from envs.tooling.registry import Choice

    try:
        cfg: Any = load_config(schema, config, overrides)
    except Exception:  # --help must print even beside a broken override
        cfg = schema()
    parts: list[str] = []

    def visit(node: Any, prefix: str) -> None:
        for f in dataclasses.fields(node):
            value, key = getattr(node, f.name), prefix + f.name
            if isinstance(value, Choice) and value.registry:
                registry = resolve(value.registry)
                if value.name in registry and len(registry.describe(value.name).splitlines()) > 1:
                    parts.append(f"{key}.options (of {key}.name={value.name}); " + registry.describe(value.name))
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):  # dss.finder, stages.*.rule
                visit(value, key + ".")

    visit(cfg, "")
    return "\n\n".join(parts)


def _parser(
    prog: str, description: str, commands: Sequence[Command], chosen: str | None, argv: Sequence[str] = ()
) -> argparse.ArgumentParser:
    """The parser; only the ``chosen`` command's subparser is complete (its schema imported for its ``--help``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands:
        if command.name != chosen:  # listed in PROG --help; argparse never parses with it
            sub.add_parser(command.name, help=command.summary)
            continue
        options = "\n".join(
            textwrap.fill(line, 110, subsequent_indent="      ") for line in config_help(command.schema)
        )
        default = f" (default: {command.default_config})" if command.default_config else ""
        entries = ""
        if "-h" in argv or "--help" in argv:  # the options of the rule, estimator, ... the command line picks
            words = [a for a in argv if not a.startswith("-") and a != chosen]
            config = words[0] if words and "=" not in words[0] and not command.positional else None
            overrides = [w for w in words if "=" in w]
            entries = _entries_help(command.schema, config or command.default_config, overrides)
        epilog = (
            f"options (set in the YAML file or as key=value):\n{options}\n\n"
            + (f"{entries}\n\n" if entries else "")
            + "The resolved config is saved as config.yaml in the run directory the command prints."
        )
        p = sub.add_parser(
            command.name,
            help=command.summary,
            description=command.summary,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if command.positional:
            p.add_argument("config", nargs="?", metavar=command.positional.upper(), help=f"sets {command.positional}")
        else:
            p.add_argument("config", nargs="?", help=f"YAML config file{default}; packaged configs are found by name")
        example = f", e.g. {command.example}" if command.example else " (the options are listed below)"
        p.add_argument("overrides", nargs="*", help=f"key=value overrides{example}")
    return parser


def main_for(prog: str, description: str, commands: Sequence[Command], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen command, and return the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)  # PROG [-h] COMMAND ...
    parser = _parser(prog, description, commands, chosen, argv)
    args = parser.parse_args(argv)
    by_name = {c.name: c for c in commands}
    if args.command is None:
        parser.print_help()
        return 0
    command = by_name[args.command]
    schema, run = command.schema, command.run  # import errors are bugs, not bad input: outside the try below
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # no file given, only overrides
        config, overrides = None, [config, *overrides]
    elif config is not None and command.positional:
        config, overrides = None, [f"{command.positional}={config}", *overrides]
    try:
        cfg: Any = load_config(schema, config or command.default_config, overrides)
        if getattr(cfg, "threads", None) is not None:
            check_range(cfg, "threads", low=0, integer=True)
        with intra_op_threads(getattr(cfg, "threads", None)):
            run(cfg)
    except (ConfigError, TaskError, DataNotFoundError, ValueError) as exc:
        print(f"{prog} {command.name}: error: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"{prog} {command.name}: error: {exc.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog} {command.name}: interrupted; finished work is kept, rerun the same command to continue",
              file=sys.stderr)  # fmt: skip
        return 130
    return 0
