"""Tuned Adam baselines are computed once per setting and shared by later runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import envs
from envs.tooling.config import load_config
from metaopt.training import TrainConfig, tune_adam, validation


def test_a_second_tuning_with_the_same_settings_reads_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAOPT_CACHE", str(tmp_path))
    calls: list[int] = []
    real = validation.tuned_baseline

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(validation, "tuned_baseline", counted)
    cfg = load_config(
        TrainConfig, "metaopt/quadratic.yaml", ["steps=20", "truncation=20", "tune_seeds=1", "val_seeds=1"]
    )
    task = envs.make_task("quadratic")
    first = tune_adam(cfg, task)
    again = tune_adam(cfg, task)
    assert first == again and len(calls) == 1 and (tmp_path / "adam_baselines.json").is_file()
    other = load_config(
        TrainConfig, "metaopt/quadratic.yaml", ["steps=40", "truncation=20", "tune_seeds=1", "val_seeds=1"]
    )
    tune_adam(other, task)  # another horizon: another key
    assert len(calls) == 2
    monkeypatch.setenv("METAOPT_CACHE", "off")
    monkeypatch.chdir(tmp_path)
    assert tune_adam(cfg, task) == first and tune_adam(cfg, task) == first and len(calls) == 4  # off: tuned every time
    assert not (tmp_path / "off").exists()  # and nothing written


def test_a_broken_cache_file_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAOPT_CACHE", str(tmp_path))
    (tmp_path / "adam_baselines.json").write_text("{not json")
    cfg = load_config(
        TrainConfig, "metaopt/quadratic.yaml", ["steps=20", "truncation=20", "tune_seeds=1", "val_seeds=1"]
    )
    result = tune_adam(cfg, envs.make_task("quadratic"))
    assert set(result) == {"lr", "val", "val_eval"}
