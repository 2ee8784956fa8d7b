"""Geodesic targets and the geodesic objective: exact ends, equal arc-length spacing, inside the level set, resumable;
imitation is zero on the targets and grows with the distance; windows start where the base run was."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import envs
from envs.tooling.config import load_config
from geodesics import DSSConfig, ParamSpace
from metaopt import CoordinateLSTM, TargetDataset, TrainConfig, imitation_loss, start_window, unroll, warm_state
from metaopt.commands.targets import TargetsConfig, run_targets
from metaopt.commands.train import run_train
from metaopt.inner import batches_from
from metaopt.objectives import ObjectiveConfig, make_objective
from metaopt.rules.lstm import initial_state, lstm_step
from metaopt.targets import base_trajectory, make_shard
from metaopt.training import DatasetWindows

SMALL = ["seeds=2", "steps=30", "window=10", "stride=10", "device=cpu", "dss.max_rounds=4", "dss.max_steps=300"]


def targets_config(out: Path, *overrides: str) -> TargetsConfig:
    return load_config(TargetsConfig, "metaopt/targets/poly_cubic.yaml", [*SMALL, f"out={out}", *overrides])


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("targets") / "run"
    run_targets(targets_config(out))
    return out


def test_targets_start_and_end_exactly_and_are_evenly_spaced(dataset_dir: Path) -> None:
    dataset = TargetDataset(dataset_dir, connected_only=False)
    assert len(dataset) == 2 * 3 and dataset.window == 10
    for window in dataset.windows:
        iterates = dataset.iterates_of(window)
        assert torch.equal(window.targets[0], iterates[window.t])
        assert torch.equal(window.targets[-1], iterates[window.t + window.window])
        steps = (window.targets[1:].double() - window.targets[:-1].double()).norm(dim=1)
        if window.connected and window.num_beads == 2:  # a straight string: equal chords
            torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-4, atol=1e-7)


def test_connected_targets_lie_inside_the_level_set(dataset_dir: Path) -> None:
    dataset = TargetDataset(dataset_dir)
    space = ParamSpace(envs.make_task("poly_cubic"))
    for window in dataset.windows:
        losses = space.batched_eval_loss(window.targets)
        assert float(losses.max()) <= window.level * (1 + 1e-6)


def test_a_window_whose_end_is_above_its_level_is_kept_and_flagged() -> None:
    task = envs.make_task("poly_cubic")
    shard = make_shard(task, 0, optimizer="adam", lr=0.05, steps=40, window=40, stride=40, slack=-0.5,
                       dss=DSSConfig(max_rounds=2, max_steps=200))  # fmt: skip
    (window,) = shard["windows"]
    assert not window["connected"] and window["reason"].startswith("endpoint")  # a level below the end is flagged
    assert torch.equal(window["targets"][0], shard["iterates"][0])


def test_targets_command_resumes_shard_by_shard(dataset_dir: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import metaopt.commands.targets as module

    out = tmp_path / "run"
    calls = []
    original = module.make_shard

    def dies_on_second(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "make_shard", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_targets(targets_config(out))
    monkeypatch.setattr(module, "make_shard", original)
    run_targets(targets_config(out))
    for name in ("00-poly_cubic-seed0.pt", "00-poly_cubic-seed1.pt"):
        mine = torch.load(out / "targets" / name, weights_only=True)
        whole = torch.load(dataset_dir / "targets" / name, weights_only=True)
        assert torch.equal(mine["iterates"], whole["iterates"])
        assert all(torch.equal(a["targets"], b["targets"]) for a, b in zip(mine["windows"], whole["windows"]))
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len([r for r in records if r["kind"] == "shard"]) == 2  # no duplicate shard record


def test_imitation_is_zero_on_the_targets_and_grows_with_the_distance() -> None:
    torch.manual_seed(0)
    targets = torch.randn(6, 9)
    assert float(imitation_loss(targets, targets)) == 0.0
    direction = torch.randn(6, 9)
    direction[0] = 0
    values = [float(imitation_loss(targets + scale * direction, targets)) for scale in (0.1, 0.2, 0.4, 0.8)]
    assert values == sorted(values) and values[0] > 0
    assert values[1] == pytest.approx(4 * values[0], rel=1e-5)  # quadratic in the distance
    scaled = float(imitation_loss(2 * (targets + 0.1 * direction), 2 * targets))
    assert scaled == pytest.approx(values[0], rel=1e-5)  # normalised by the window's length


def test_a_window_starts_at_theta_t_with_the_base_runs_batches(dataset_dir: Path) -> None:
    dataset = TargetDataset(dataset_dir)
    window = next(w for w in dataset.windows if w.t > 0)
    task = envs.make_task("poly_cubic")
    inner = start_window(task, window, CoordinateLSTM())
    flat = torch.cat([p.detach().reshape(-1) for p in inner.model.parameters()])
    assert torch.equal(flat, window.start) and inner.step == window.t
    assert torch.equal(inner.take_batch()[0], next(batches_from(task, window.seed, window.t))[0])
    trajectory = unroll(inner, window.window)
    assert trajectory.context["targets"] is window.targets
    assert torch.equal(trajectory.iterates[0], window.start)


def test_warm_state_is_the_network_run_over_the_base_gradients() -> None:
    task = envs.make_task("quadratic", dim=4)
    iterates, _ = base_trajectory(task, 3, "adam", 0.1, 5)
    net = CoordinateLSTM()
    state = initial_state(net, 4)
    model = task.init_model(3)
    batches = task.batches(3)
    for s in range(3):
        with torch.no_grad():
            next(model.parameters()).copy_(iterates[s])
        grads = torch.autograd.grad(task.loss(model, next(batches)), list(model.parameters()))
        _, state = lstm_step(net, torch.cat([g.reshape(-1) for g in grads]), state)
    warmed = warm_state(net, task, 3, iterates, 3)
    for a, b in zip(warmed, state):
        torch.testing.assert_close(a, b)
    assert all(torch.count_nonzero(part) == 0 for part in warm_state(net, task, 3, iterates, 0))


def test_geodesic_meta_training_runs_from_the_dataset(dataset_dir: Path, tmp_path: Path) -> None:
    overrides = [
        f"targets={dataset_dir}", "objective.name=geodesic", "objective.options.loss_weight=0.1", "truncation=10",
        "steps=30", "episodes=3", "meta_batch=2", "val_every=3", "val_seeds=2", "tune_seeds=1", "lr_grid=[0.01,0.1]",
        "tasks=[{name: poly_cubic}]", "device=cpu", "warm_start=true", "on_policy_every=2", f"out={tmp_path / 'run'}",
    ]  # fmt: skip
    metrics = run_train(load_config(TrainConfig, "metaopt/quadratic.yaml", overrides))
    assert metrics["meta_steps"] == 3 and metrics["skipped_steps"] == 0
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_teacher_targets_are_the_base_optimizers_iterates_exactly(dataset_dir: Path, tmp_path: Path) -> None:
    overrides = [f"targets={dataset_dir}", "objective.name=teacher", "truncation=10", "steps=30", "device=cpu",
                 "tasks=[{name: poly_cubic}]", "meta_batch=3", f"out={tmp_path / 'run'}"]  # fmt: skip
    cfg = load_config(TrainConfig, "metaopt/quadratic.yaml", overrides)
    windows = DatasetWindows(cfg, torch.device("cpu"), torch.float32)
    shard = windows.dataset.shards[0]
    rerun, _ = base_trajectory(envs.make_task("poly_cubic"), int(shard["seed"]), shard["optimizer"], shard["lr"],
                               int(shard["steps"]))  # fmt: skip
    net = CoordinateLSTM()
    picks = list(range(len(windows.dataset)))
    for index, inner in zip(picks, windows.inners(picks, net, {})):
        window = windows.dataset[index]
        teacher = inner.context["teacher"]
        assert teacher.shape == window.targets.shape
        assert torch.equal(teacher, windows.dataset.iterates_of(window)[window.t : window.t + window.window + 1])
        if window.seed == int(shard["seed"]):  # the base optimizer rerun from theta_0 gives the same points
            assert torch.equal(teacher, rerun[window.t : window.t + window.window + 1])
        trajectory = unroll(inner, window.window)
        objective = make_objective(ObjectiveConfig(name="teacher"))
        assert float(objective(dataclasses.replace(trajectory, iterates=teacher.clone()))) == 0.0
        assert float(objective(trajectory).detach()) > 0.0
    metrics = run_train(load_config(TrainConfig, "metaopt/quadratic.yaml", [*overrides, "episodes=2", "val_every=2",
                                    "val_seeds=1", "tune_seeds=1", "lr_grid=[0.1]"]))  # fmt: skip
    assert metrics["meta_steps"] == 2 and metrics["skipped_steps"] == 0


def test_window_length_must_match_the_truncation(dataset_dir: Path, tmp_path: Path) -> None:
    overrides = [f"targets={dataset_dir}", "objective.name=geodesic", "truncation=5", "steps=10", "device=cpu",
                 "tasks=[{name: poly_cubic}]", f"out={tmp_path / 'run'}"]  # fmt: skip
    with pytest.raises(ValueError, match="windows of T = 10 steps but truncation is 5; set truncation=10"):
        run_train(load_config(TrainConfig, "metaopt/quadratic.yaml", overrides))


OLD_DATASET = Path(__file__).parents[1] / "data" / "targets-v1"  # see data/README.md


def test_a_dataset_written_before_the_restructuring_loads_and_its_base_run_is_reproduced() -> None:
    dataset = TargetDataset(OLD_DATASET)
    assert len(dataset) == 2 and dataset.window == 5
    (shard,) = dataset.shards
    task = envs.make_task("poly_cubic")
    iterates, losses = base_trajectory(task, 0, shard["optimizer"], shard["lr"], shard["steps"])
    # to float32 rounding: the file was written on another CPU, whose kernels round a few sums differently (2e-7 here,
    # against steps of 2e-2); on the CPU that wrote it, bit for bit
    torch.testing.assert_close(iterates, shard["iterates"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses, shard["train_losses"], rtol=1e-5, atol=1e-6)
    window = dataset[1]
    inner = start_window(task, window, CoordinateLSTM(), dataset.iterates_of(window), warm=True)
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in inner.model.parameters()]), window.start)
    assert inner.step == window.t == 5


def test_a_diverging_base_run_is_refused_with_the_step() -> None:
    with pytest.raises(ValueError, match=r"the base optimizer sgd \(lr=1e\+06\) diverged at step \d+ on seed 0"):
        base_trajectory(envs.make_task("quadratic", dim=4), 0, "sgd", 1e6, 50)
