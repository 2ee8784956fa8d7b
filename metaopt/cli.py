"""The ``metaopt`` command line: ``metaopt COMMAND [CONFIG] [key=value ...]`` (``metaopt COMMAND --help``).

Also ``python -m metaopt COMMAND ...`` (``metaopt/__main__.py``), the form ``torchrun`` launches. The commands live in
:mod:`metaopt.commands`; the engine never imports them. The table names each schema and function as a
``"module:attribute"`` string, imported only for the chosen command: ``metaopt --help`` does not import torch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import envs
from envs.lazy import resolve
from envs.tooling.cli import Command, main_for

__all__ = ["COMMANDS", "CONFIG_SCHEMAS", "EXAMPLES", "main", "schema_for_config"]


@dataclass
class TasksConfig:
    """Configuration of ``metaopt tasks`` (no options)."""


def list_tasks_command(cfg: TasksConfig) -> None:
    """Print every task with its parameter count, default recipe and Gymnasium id."""
    print(f"{'task':16} {'params':>8}  {'recipe':28} gymnasium id")
    for name in envs.list_tasks():
        cls = envs.get_task_class(name)
        recipe = f"{cls.recipe.optimizer} lr={cls.recipe.lr:g} x{cls.recipe.steps}"
        try:
            size = str(envs.make_task(name).num_params)
        except envs.DataNotFoundError:
            size = "(data?)"
        print(f"{name:16} {size:>8}  {recipe:28} {envs.ENV_IDS[name]}")


EXAMPLES: dict[str, str] = {
    "tasks": "",
    "fit": "task.options.width=40 seed=3",
    "train": "episodes=50 meta_lr=0.01 net.hidden_size=10",
    "compare": "eval_seeds=50 optimizers=[sgd,adam] tasks.quadratic.steps=200",
    "targets": "seeds=8 window=10 stride=10 dss.max_steps=300",
    "quickstart": "scale=full out=runs/quickstart",
    "census": "seeds=1 windows=[20,100] max_connects=2",
}
"""The ``key=value`` overrides each command's ``--help`` shows as its example (keys of that command's schema, loaded
on top of its default config by a test)."""


# Each schema and function as "module:attribute": importing them here would make `metaopt --help` import torch.
COMMANDS = [
    Command(
        "tasks",
        TasksConfig,
        list_tasks_command,
        "list the tasks, their sizes, recipes and environment ids",
        example=EXAMPLES["tasks"],
    ),
    Command(
        "fit",
        "envs.commands.fit:FitConfig",
        "envs.commands.fit:run_fit",
        "train one task with its recipe; writes a run directory",
        default_config="tasks/digits_mlp.yaml",
        example=EXAMPLES["fit"],
    ),
    Command(
        "train",
        "metaopt.training:TrainConfig",
        "metaopt.commands:run_train",
        "meta-train a learned optimizer (default the coordinatewise LSTM) on a task family; writes checkpoints",
        default_config="metaopt/quadratic.yaml",
        example=EXAMPLES["train"],
    ),
    Command(
        "compare",
        "metaopt.compare:CompareConfig",
        "metaopt.commands:run_compare",
        "tune baselines on a learning-rate grid, compare them on paired seeds; writes report, CSVs, plots, TensorBoard",
        default_config="compare/quadratic.yaml",
        example=EXAMPLES["compare"],
    ),
    Command(
        "targets",
        "metaopt.commands:TargetsConfig",
        "metaopt.commands:run_targets",
        "record base-optimizer trajectories and connect their windows with DSS: a geodesic-target dataset",
        default_config="metaopt/targets/digits_mlp.yaml",
        example=EXAMPLES["targets"],
    ),
    Command(
        "census",
        "metaopt.commands.census:CensusConfig",
        "metaopt.commands.census:run_census",
        "is there level-set curvature between iterates of an optimizer? chord checks, inside lengths, the oracle",
        default_config="metaopt/census/census.yaml",
        example=EXAMPLES["census"],
    ),
    Command(
        "quickstart",
        "metaopt.commands:QuickstartConfig",
        "metaopt.commands:run_quickstart",
        "the whole pipeline on bundled data: targets, meta-training, comparison; one run directory with a report",
        default_config="quickstart.yaml",
        example=EXAMPLES["quickstart"],
    ),
]


CONFIG_SCHEMAS: dict[str, str] = {
    "tasks": "envs.commands.fit:FitConfig",
    "compare": "metaopt.compare:CompareConfig",
    "geodesics/connect": "geodesics.commands:ConnectConfig",
    "geodesics/sweep": "geodesics.commands:SweepConfig",
    "geodesics/compare_paths": "geodesics.commands:ComparePathsConfig",
    "geodesics/topology": "geodesics.commands:TopologyConfig",
    "geodesics/disconnection.yaml": "geodesics.commands:DisconnectionConfig",
    "metaopt": "metaopt.training:TrainConfig",
    "metaopt/targets": "metaopt.commands:TargetsConfig",
    "metaopt/census": "metaopt.commands.census:CensusConfig",
    "quickstart.yaml": "metaopt.commands:QuickstartConfig",
}
"""Which schema (``"module:attribute"``, see :func:`schema_for_config`) the YAML files under each ``configs/`` folder
(or a single file) load into."""


def schema_for_config(relative: str | Path) -> type:
    """The schema of a shipped config, from its path relative to ``configs/`` (its folder names the group)."""
    path = Path(relative)
    for depth in range(len(path.parts), 0, -1):  # the file itself, then its folders from the innermost
        key = "/".join(path.parts[:depth])
        if key in CONFIG_SCHEMAS:
            schema: type = resolve(CONFIG_SCHEMAS[key])
            return schema
    raise KeyError(f"no schema is declared for configs/{path}; add its folder to CONFIG_SCHEMAS")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metaopt`` console script."""
    args = _resume_base(list(sys.argv[1:] if argv is None else argv))
    return main_for("metaopt", "Meta-learned optimizers built on loss-landscape geometry.", COMMANDS, args)


def _resume_base(argv: list[str]) -> list[str]:
    """``metaopt train resume=RUN key=value ...`` without a config file: the run's saved config is the base.

    So the overrides given beside ``resume=`` are the only changes ``run_train`` sees (and accepts or refuses by
    name), instead of every key in which the default config file differs from the run's.
    """
    if len(argv) < 2 or argv[0] != "train" or "=" not in argv[1]:
        return argv  # another command, --help, or a config file given: it is compared with the saved config as is
    runs = [arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("resume=")]
    saved = Path(runs[-1]) / "config.yaml" if runs and runs[-1] not in ("", "null") else None
    return [argv[0], str(saved), *argv[1:]] if saved is not None and saved.is_file() else argv


if __name__ == "__main__":
    sys.exit(main())
