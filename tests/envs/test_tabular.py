"""The scikit-learn tables: fixed disjoint split, standardization from the training rows only, determinism, contract."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
import torch

import envs
from envs.tasks.tabular import DATASETS, SYNTHETIC, TabularMLPTask, load_table, split_rows

DATASET_NAMES = sorted(DATASETS)


def make(**options: Any) -> TabularMLPTask:
    task = envs.make_task("tabular_mlp", **options)
    assert isinstance(task, TabularMLPTask)
    return task


def _raw_rows(dataset: str, rows: np.ndarray) -> np.ndarray:
    return load_table(dataset)[0][rows]


@pytest.mark.parametrize("dataset", DATASET_NAMES)
def test_split_is_fixed_disjoint_and_covers_every_row(dataset: str) -> None:
    n = len(load_table(dataset)[1])
    train, test = split_rows(n, 0.3, 0)
    assert set(train).isdisjoint(test) and len(train) + len(test) == n
    assert len(test) == round(0.3 * n)
    again_train, again_test = split_rows(n, 0.3, 0)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    task = make(dataset=dataset)
    x_train, _ = task._split()[0]
    x_eval, _ = task.eval_data()
    assert len(x_train) == len(train) and len(x_eval) == len(test)
    # no evaluation row appears among the training rows
    train_rows = {tuple(r) for r in np.round(x_train.double().numpy(), 4)}
    assert not any(tuple(r) in train_rows for r in np.round(x_eval.double().numpy(), 4))


@pytest.mark.parametrize("dataset", DATASET_NAMES)
def test_standardization_uses_the_training_rows_only(dataset: str) -> None:
    task = make(dataset=dataset, valid_size=10, dtype=torch.float64)
    n = len(load_table(dataset)[1])
    train, test = split_rows(n, 0.3, 0)
    fit_rows = train[:-10]
    raw = _raw_rows(dataset, fit_rows)
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    x_train, y_train = task._split()[0]
    x_eval, _ = task.eval_data()
    held_out = task._split()[2]
    assert held_out is not None
    x_valid = held_out[0]
    # the training rows are standardized exactly: mean 0 and unit standard deviation per feature
    assert np.allclose(x_train.numpy().mean(axis=0), 0, atol=1e-10)
    assert np.allclose(x_train.numpy().std(axis=0), 1, atol=1e-10)
    # the evaluation and held-out rows are mapped with those same statistics (a leak would change them)
    assert np.allclose(x_eval.numpy(), (_raw_rows(dataset, test) - mean) / std, atol=1e-12)
    assert np.allclose(x_valid.numpy(), (_raw_rows(dataset, train[-10:]) - mean) / std, atol=1e-12)
    everything = np.concatenate([fit_rows, test, train[-10:]])
    leaked = (_raw_rows(dataset, test) - _raw_rows(dataset, everything).mean(axis=0)) / std
    assert not np.allclose(x_eval.numpy(), leaked, atol=1e-6)
    if not DATASETS[dataset]:  # regression: the target standardized with the training rows' statistics as well
        y = load_table(dataset)[1]
        assert np.allclose(y_train.numpy(), (y[fit_rows] - y[fit_rows].mean()) / y[fit_rows].std(), atol=1e-12)
        assert float(task.criterion(torch.zeros(len(y_train), 1, dtype=torch.float64), y_train)) == pytest.approx(1.0)


@pytest.mark.parametrize("dataset", DATASET_NAMES)
def test_same_seed_same_batches_and_run(dataset: str) -> None:
    task = make(dataset=dataset)
    a, b, c = task.batches(3), task.batches(3), task.batches(4)
    differs = False
    for _ in range(5):
        (xa, ya), (xb, yb), (xc, _) = next(a), next(b), next(c)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.shape == (32, load_table(dataset)[0].shape[1])
        differs |= not torch.equal(xa, xc)
    assert differs
    assert envs.fit(task, 7, steps=5).losses == envs.fit(task, 7, steps=5).losses


@pytest.mark.parametrize("dataset", DATASET_NAMES)
def test_default_recipe_learns(dataset: str) -> None:
    task = make(dataset=dataset)
    initial = task.eval_loss(task.init_model(1))
    result = envs.fit(task, 1)
    assert not result.diverged
    if not DATASETS[dataset]:  # regression on a standardized target: R² above 0.25 on the evaluation rows
        assert result.eval_metrics["loss"] < 0.75 < initial
    else:
        assert result.eval_metrics["loss"] < 0.5 * initial
        assert result.eval_metrics["accuracy"] > 0.85
        assert cast(torch.nn.Sequential, task.init_model(0))[-1].out_features == DATASETS[dataset]


def test_the_gym_env_passes_check_env() -> None:
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import envs.gym

    env = gym.make(envs.gym.env_id("tabular_mlp"), dataset="iris")
    check_env(env.unwrapped, skip_render_check=True)
    assert envs.gym.env_id("tabular_mlp") == "metaopt/TabularMLP-v0"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"dataset": "titanic"}, "unknown dataset 'titanic'; valid: wine"),
        ({"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\)"),
        ({"width": 0}, "width must be positive"),
        ({"activation": "swish"}, "unknown activation"),
    ],
)
def test_bad_options_are_one_clear_message(options: dict[str, object], match: str) -> None:
    with pytest.raises((ValueError, envs.TaskError), match=match):
        make(**options)


def test_valid_size_that_leaves_no_training_rows_is_refused() -> None:
    task = make(dataset="iris", valid_size=200)
    with pytest.raises(envs.TaskError, match="valid_size=200"):
        task.eval_data()


def test_the_synthetic_tables_are_the_generators_rows_at_seed_zero() -> None:
    import sklearn.datasets

    for dataset, (generator, arguments) in SYNTHETIC.items():
        x, y = load_table(dataset)
        ref_x, ref_y = getattr(sklearn.datasets, generator)(**arguments, random_state=0)
        assert np.array_equal(x, ref_x) and np.array_equal(y, ref_y)
        assert np.array_equal(load_table(dataset)[0], x)  # the same rows at every call
        assert y.dtype == (np.int64 if DATASETS[dataset] else np.float64)
        if DATASETS[dataset]:
            assert set(np.unique(y)) == set(range(DATASETS[dataset]))
    assert load_table("moons")[0].shape == (300, 2) and load_table("friedman1")[0].shape == (300, 10)
    assert load_table("classification")[0].shape == (300, 20)


def test_the_development_suite_shares_no_task_with_the_held_out_suite_or_the_family() -> None:
    from pathlib import Path

    from envs.tooling.config import load_config
    from metaopt.compare import CompareConfig

    root = Path(__file__).resolve().parents[2] / "configs"
    dev = load_config(CompareConfig, root / "compare" / "dev_suite.yaml")
    held = load_config(CompareConfig, root / "compare" / "heldout_suite.yaml")
    assert len(dev.tasks) >= 6 and not set(dev.tasks) & set(held.tasks)
    held_keys = {(t.name, tuple(sorted(t.options.items())), t.steps) for t in held.tasks.values()}
    assert not {(t.name, tuple(sorted(t.options.items())), t.steps) for t in dev.tasks.values()} & held_keys
    dev_tables = {t.options["dataset"] for t in dev.tasks.values() if t.name == "tabular_mlp"}
    held_tables = {t.options["dataset"] for t in held.tasks.values() if t.name == "tabular_mlp"}
    assert dev_tables == set(SYNTHETIC) and not dev_tables & held_tables
    family = (root / "metaopt" / "family_v7.yaml").read_text()
    assert "tabular_mlp" not in family  # no table in meta-training
    assert all(t.options.get("width", 0) > 64 for t in dev.tasks.values() if t.name == "digits_mlp" and t.steps <= 200)
