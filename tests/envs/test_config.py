"""Configs: every shipped YAML loads into its schema; unknown keys and wrong types are one clear message."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

import envs
from envs.commands.fit import FitConfig
from envs.errors import ConfigError
from envs.tooling.config import TaskConfig, config_help, field_docs, find_config, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def schema_for(path: Path) -> type:
    """The schema each group of configs loads into."""
    from metaopt.cli import schema_for_config

    return schema_for_config(path.relative_to(CONFIGS))


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_yaml_loads_into_its_schema(path: Path) -> None:
    schema = schema_for(path)
    cfg = load_config(schema, path)
    assert isinstance(cfg, schema)


@pytest.mark.parametrize("path", sorted((CONFIGS / "tasks").glob("*.yaml")), ids=lambda p: p.stem)
def test_task_configs_name_their_task_with_valid_options(path: Path) -> None:
    cfg = load_config(FitConfig, path)
    assert cfg.task.name == path.stem
    cls = envs.get_task_class(cfg.task.name)
    envs.task.registry.validate_options(cls, cfg.task.options)


def test_every_task_has_a_config() -> None:
    assert {p.stem for p in (CONFIGS / "tasks").glob("*.yaml")} == set(envs.list_tasks())


def test_overrides_merge_over_yaml_and_convert_types() -> None:
    cfg = load_config(FitConfig, "tasks/digits_mlp.yaml", ["seed=4", "task.options.width=40", "lr=0.5"])
    assert cfg.seed == 4 and cfg.lr == 0.5 and cfg.task.options["width"] == 40
    assert cfg.task.options["activation"] == "sigmoid"  # from the YAML


@dataclass
class Inner:
    size: int = 3
    """How big."""


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    """Nested part."""
    rate: float = 0.1
    """A rate."""


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["rtae=2"], r"bad config at 'rtae'.*valid keys here: inner, rate"),
        (["inner.sise=2"], r"bad config at 'inner.sise'.*valid keys here: size"),
        (["rate=fast"], r"bad config at 'rate'.*could not be converted"),
        (["rate"], r"overrides must look like key=value"),
    ],
)
def test_bad_keys_and_types_are_one_clear_message(overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(Outer, None, overrides)


def test_missing_config_file_lists_shipped_configs() -> None:
    with pytest.raises(ConfigError, match="not found; shipped configs: .*tasks/digits_mlp.yaml"):
        find_config("tasks/nope.yaml")


def test_packaged_configs_are_found_by_relative_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config("configs/tasks/quadratic.yaml").is_file()
    assert find_config("tasks/quadratic.yaml").is_file()


def test_help_comes_from_field_docstrings() -> None:
    assert field_docs(Outer) == {"inner": "Nested part.", "rate": "A rate."}
    lines = config_help(Outer)
    assert "inner.size = 3: How big." in lines and "rate = 0.1: A rate." in lines
    assert all(": " in line and line.split(": ", 1)[1] for line in config_help(TaskConfig))


def test_renaming_a_task_on_the_command_line_drops_the_files_options_of_the_old_task() -> None:
    cfg = load_config(FitConfig, "tasks/digits_mlp.yaml", ["task.name=quadratic"])
    assert cfg.task.name == "quadratic" and cfg.task.options == {}
    cfg = load_config(FitConfig, "tasks/digits_mlp.yaml", ["task.name=quadratic", "task.options.dim=5"])
    assert cfg.task.options == {"dim": 5}
    kept = load_config(FitConfig, "tasks/digits_mlp.yaml", ["task.name=digits_mlp"])  # not a rename
    assert kept.task.options["width"] == 20 and kept.task.options["activation"] == "sigmoid"
    assert load_config(FitConfig, "tasks/digits_mlp.yaml", ["name=other"]).task.options["width"] == 20


def test_every_meta_training_config_states_its_cost_and_a_smoke_test() -> None:
    root = Path(__file__).resolve().parents[2] / "configs" / "metaopt"
    for path in sorted(root.glob("*.yaml")):
        header = [line for line in path.read_text().splitlines() if line.startswith("#")]
        assert any(line.startswith("# Cost: about ") and "CPU core" in line for line in header), path.name
        smoke = f"metaopt train configs/metaopt/{path.name} episodes=2 val_every=1 val_seeds=1 tune_seeds=1"
        assert any(line.strip("# ") == smoke for line in header), path.name
