"""The comparison harness: pairing, stable tuning, divergence, resume, the plain path, outputs, bad input."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import envs
import envs.training.optim
from envs.tooling.config import load_config
from envs.tooling.runs import Run
from metaopt import CoordinateLSTM, list_pretrained, save_checkpoint
from metaopt.cli import main
from metaopt.commands import run_compare
from metaopt.compare import CompareConfig, CompareTaskConfig, compute_results, make_plan

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "compare"


def tiny(out: Path, **overrides: Any) -> CompareConfig:
    """A comparison small enough for a test: two quadratic tasks, three learning rates, a few seeds."""
    settings: dict[str, Any] = {
        "tasks": {
            "quad": CompareTaskConfig(name="quadratic", steps=20, targets=[3.0]),
            "quad5": CompareTaskConfig(name="quadratic", options={"dim": 5}, steps=30, held_out=True),
        },
        "optimizers": ["sgd", "adam"],
        "lr_grid": [0.003, 0.03, 0.3],
        "tuning_seeds": 2,
        "eval_seeds": 3,
        "final_window": 3,
        "timing": False,
        "device": "cpu",
        "out": str(out),
    }
    settings.update(overrides)
    return CompareConfig(**settings)


def eval_curves(run: Run, task: str) -> dict[tuple[str, int], list[float]]:
    return {
        (r["optimizer"], r["seed"]): [float(v) for v in r["losses"]]
        for r in run.records("unit")
        if r["phase"] == "eval" and r["task"] == task
    }


@pytest.fixture
def registry() -> Iterator[None]:
    """Optimizers registered by a test are forgotten after it."""
    before = set(envs.training.optim.OPTIMIZERS.names())
    yield
    for name in set(envs.training.optim.OPTIMIZERS.names()) - before:
        envs.training.optim.OPTIMIZERS.unregister(name)


class PlainSGD(torch.optim.SGD):
    """SGD under another class: no functional twin, so it runs in the plain loop."""


# -- pairing ----------------------------------------------------------------------------------------------------------


def test_every_optimizer_sees_the_same_weights_and_batches_on_an_evaluation_seed(
    tmp_path: Path, registry: None
) -> None:
    """With a learning rate of 1e-30 no weight moves, so a run's loss curve is loss(initial weights, batch t) for
    each step t: a fingerprint of exactly what the model was given, whatever the optimizer and the path."""
    envs.register_optimizer("plain_sgd", PlainSGD)
    cfg = tiny(
        tmp_path / "run",
        tasks={"digits": CompareTaskConfig(name="digits_mlp", steps=4)},
        optimizers=["sgd", "momentum", "nesterov", "rmsprop", "adam", "plain_sgd"],
        lr_grid=[1e-30],
        tuning_seeds=1,
    )
    run, _ = compute_results(cfg, progress=False)
    curves = eval_curves(run, "digits")
    task = envs.make_task("digits_mlp")
    for seed in cfg.eval_seed_list:
        model, batches = task.init_model(seed), task.batches(seed)
        with torch.no_grad():
            expected = [float(task.loss(model, next(batches))) for _ in range(4)]
        for name in ("sgd", "momentum", "nesterov", "rmsprop", "adam"):
            assert curves[(name, seed)] == curves[("sgd", seed)]  # same chunk shape: bit for bit
        np.testing.assert_allclose(curves[("plain_sgd", seed)], curves[("sgd", seed)], rtol=1e-6)
        np.testing.assert_allclose(curves[("sgd", seed)], expected, rtol=1e-6)
        assert len(set(expected)) == 4  # a new batch every step
    first_losses = {curves[("sgd", seed)][0] for seed in cfg.eval_seed_list}
    assert len(first_losses) == cfg.eval_seeds  # and new weights and batches on every seed


# -- tuning and divergence -------------------------------------------------------------------------------------------


def largest_eigenvalue(seed: int) -> float:
    """Of the Hessian 2 W^T W of the quadratic ||W theta - y||^2 drawn for ``seed``."""
    w = envs.make_task("quadratic").instance(seed).problem[0].double()
    return float(2 * torch.linalg.matrix_norm(w, 2) ** 2)


def test_tuned_sgd_rate_is_below_two_over_the_largest_curvature(tmp_path: Path) -> None:
    grid = [float(lr) for lr in np.geomspace(1e-3, 1.0, 31)]  # fine enough to land next to the edge
    cfg = tiny(
        tmp_path / "run",
        tasks={"quad": CompareTaskConfig(name="quadratic", steps=100)},
        optimizers=["sgd"],
        reference="sgd",
        lr_grid=grid,
        tuning_seeds=3,
        eval_seeds=2,
    )
    _, (result,) = compute_results(cfg, progress=False)
    edge = 2 / max(largest_eigenvalue(seed) for seed in cfg.tuning_seed_list)
    tuning = result.optimizers[0].tuning
    assert tuning is not None and tuning.chosen is not None
    assert tuning.chosen < edge
    assert tuning.chosen > edge / 2  # tuned: SGD on an ill-conditioned quadratic wants the largest stable rate
    assert tuning.diverged_runs > 0  # the grid reached well past the edge


def test_the_wall_clock_speed_up_comes_from_the_timings_of_the_record(tmp_path: Path) -> None:
    """Each row's speed-up in wall time is its step speed-up times the reference's time per step over its own, from
    the timing records alone: rewritten timings give the rewritten ratio in the table, the summary and the CSV."""
    cfg = tiny(tmp_path / "run", timing=True)
    run, tasks = compute_results(cfg, progress=False)
    for task in tasks:
        sgd, adam = task.optimizers
        assert adam.wall_speedup == pytest.approx(1.0)  # the reference against itself
        assert sgd.speedup is not None and sgd.seconds_per_step and adam.seconds_per_step
        assert sgd.wall_speedup == pytest.approx(sgd.speedup * adam.seconds_per_step / sgd.seconds_per_step)
    records = tmp_path / "run" / "records.jsonl"
    lines = []
    for line in records.read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "timing":  # SGD's step four times Adam's
            record["seconds_per_step"] = 0.004 if record["optimizer"] == "sgd" else 0.001
        lines.append(json.dumps(record))
    records.write_text("\n".join(lines) + "\n")
    run_compare(cfg, progress=False)  # nothing left to run: the outputs from the records
    run, tasks = compute_results(cfg, progress=False)
    walls = []
    for task in tasks:
        sgd = task.optimizers[0]
        assert sgd.speedup is not None and sgd.wall_speedup == pytest.approx(sgd.speedup / 4)
        walls.append(sgd.wall_speedup)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "speed-up in wall time (plain)" in report and f"{walls[0]:.3g}×" in report
    assert "wall-clock speed-up IQM" in report
    rows = list(csv.DictReader((tmp_path / "run" / "results.csv").open()))
    assert [float(r["wall_clock_speedup"]) for r in rows if r["optimizer"] == "sgd"] == pytest.approx(walls)
    untimed = tiny(tmp_path / "untimed")
    run_compare(untimed, progress=False)
    _, tasks = compute_results(untimed, progress=False)
    assert all(row.wall_speedup is None for task in tasks for row in task.optimizers)
    assert "wall" not in (tmp_path / "untimed" / "report.md").read_text()


def test_wall_times_are_added_to_a_finished_run_by_resuming_it_with_timing(tmp_path: Path) -> None:
    """``timing`` changes no loss: a run made without it resumes with it, runs only the timing jobs, and keeps every
    number it had."""
    run_compare(tiny(tmp_path / "run"), progress=False)
    records = tmp_path / "run" / "records.jsonl"
    before = records.read_text().splitlines()
    _, untimed = compute_results(tiny(tmp_path / "run"), progress=False)
    run_compare(tiny(tmp_path / "run", timing=True), progress=False)
    after = records.read_text().splitlines()
    assert after[: len(before)] == before
    added = [json.loads(line) for line in after[len(before) :]]
    assert added and {r["kind"] for r in added} == {"timing"} and len(added) == 2 * 2  # two tasks x two optimizers
    _, timed = compute_results(tiny(tmp_path / "run", timing=True), progress=False)
    for old_task, new_task in zip(untimed, timed):
        for old, new in zip(old_task.optimizers, new_task.optimizers):
            assert old.final == new.final and old.speedup == new.speedup and old.wall_speedup is None
            assert new.seconds_per_step and new.wall_speedup is not None
    assert "speed-up in wall time" in (tmp_path / "run" / "report.md").read_text()


def test_diverging_runs_are_counted_never_chosen_and_never_fatal(tmp_path: Path) -> None:
    cfg = tiny(tmp_path / "run", lr_grid=[0.01, 30.0, 100.0])
    run, tasks = compute_results(cfg, progress=False)
    sgd = tasks[0].optimizers[0]
    assert sgd.tuning is not None and sgd.tuning.chosen == 0.01
    assert sgd.tuning.diverged == (0, 2, 2)
    diverged = [r for r in run.records("unit") if r["diverged"]]
    assert diverged and all(r["losses"][-1] in ("inf", "nan") for r in diverged)

    nothing = tiny(tmp_path / "run2", lr_grid=[30.0, 100.0])  # every SGD rate diverges; Adam's do not
    _, tasks = compute_results(nothing, progress=False)
    sgd, adam = tasks[0].optimizers
    assert sgd.tuning is not None and sgd.tuning.chosen is None and sgd.seeds == 0 and sgd.final.n == 0
    assert adam.tuning is not None and adam.tuning.chosen is not None and adam.final.n == nothing.eval_seeds


def test_evaluation_seeds_that_diverge_are_counted_and_left_out(tmp_path: Path) -> None:
    """Tune on the flattest quadratic at 0.99 x its stability edge: evaluation quadratics curved more than
    2 / lr diverge, flatter ones do not."""
    curvature = {seed: largest_eigenvalue(seed) for seed in range(50)}
    flattest = min(curvature, key=curvature.__getitem__)
    lr = 0.99 * 2 / curvature[flattest]
    cfg = tiny(
        tmp_path / "run",
        tasks={"quad": CompareTaskConfig(name="quadratic", steps=100)},
        optimizers=["sgd"],
        reference="sgd",
        lr_grid=[lr],
        tuning_seeds=1,
        tuning_seed_offset=flattest,
        eval_seeds=8,
    )
    run, (result,) = compute_results(cfg, progress=False)
    sgd = result.optimizers[0]
    assert sgd.lr == lr
    by_seed = {r["seed"]: r["diverged"] for r in run.records("unit") if r["phase"] == "eval"}
    for seed, diverged in by_seed.items():
        growth = abs(1 - lr * largest_eigenvalue(seed))
        if growth > 1.7:  # |1 - lr lambda|^(2 steps) overflows float32 within 100 steps
            assert diverged, seed
        if growth < 1:
            assert not diverged, seed
    assert 0 < sgd.diverged == sum(by_seed.values()) < cfg.eval_seeds
    assert sgd.final.n == sgd.curves.shape[0] == cfg.eval_seeds - sgd.diverged
    assert np.isnan(sgd.finals).sum() == sgd.diverged


# -- resume -----------------------------------------------------------------------------------------------------------

OUTPUT_FILES = ("report.md", "results.csv", "tuning.csv", "curves.csv")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "whole"
    run_compare(tiny(out, max_stacked_runs=4), progress=False)
    return out


def test_resume_after_an_interruption_gives_the_report_of_an_uninterrupted_run(
    uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny(tmp_path / "resumed", max_stacked_runs=4)
    original = Run.append_records
    calls = 0

    def crash_in_the_middle_of_the_fourth_chunk(self: Run, records: Sequence[Mapping[str, Any]]) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            original(self, records[:2])
            with open(self.records_path, "a") as f:
                f.write('{"kind": "unit", "phase": "tu')  # torn line
            raise KeyboardInterrupt
        original(self, records)

    monkeypatch.setattr(Run, "append_records", crash_in_the_middle_of_the_fourth_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_compare(cfg, progress=False)
    monkeypatch.setattr(Run, "append_records", original)
    partial = Run(cfg.out).records("unit")  # type: ignore[arg-type]
    assert 0 < len(partial) < len(Run(uninterrupted).records("unit"))

    run_compare(cfg, progress=False)
    resumed = Path(cfg.out)  # type: ignore[arg-type]
    for name in OUTPUT_FILES:
        assert (resumed / name).read_text() == (uninterrupted / name).read_text(), name
    keys = [(r["phase"], r["task"], r["optimizer"], r["lr"], r["seed"]) for r in Run(resumed).records("unit")]
    assert len(keys) == len(set(keys)) == len(Run(uninterrupted).records("unit"))  # only missing units were added


def test_a_rerun_of_a_finished_comparison_computes_nothing(uninterrupted: Path) -> None:
    records, report = (uninterrupted / "records.jsonl").read_bytes(), (uninterrupted / "report.md").read_text()
    run_compare(tiny(uninterrupted, max_stacked_runs=4), progress=False)
    assert (uninterrupted / "records.jsonl").read_bytes() == records
    assert (uninterrupted / "report.md").read_text() == report


# -- outputs ----------------------------------------------------------------------------------------------------------


def test_outputs_report_csv_png_and_tensorboard_overlay(uninterrupted: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report = (uninterrupted / "report.md").read_text()
    assert report.index("## In-distribution tasks") < report.index("`quad`") < report.index("## Held-out tasks")
    assert report.index("## Held-out tasks") < report.index("`quad5`")
    assert "steps to ≤ 3 (seeds)" in report and "(adam final)" in report  # configured and default targets
    for task in ("quad", "quad5"):
        assert (uninterrupted / "plots" / f"{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (uninterrupted / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 and rows[0].startswith("task,task_name")
    means = {}
    for line in (uninterrupted / "curves.csv").read_text().splitlines()[1:]:
        task, optimizer, step, mean, *_ = line.split(",")
        means[(task, optimizer, int(step))] = float(mean)
    assert {p.name for p in (uninterrupted / "tb").iterdir() if p.is_dir()} == {"sgd", "adam"}
    for optimizer in ("sgd", "adam"):
        acc = EventAccumulator(str(uninterrupted / "tb" / optimizer))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        for task, steps in (("quad", 20), ("quad5", 30)):
            assert {f"compare/{task}/loss_{s}" for s in ("mean", "ci_low", "ci_high")} <= tags
            events = acc.Scalars(f"compare/{task}/loss_mean")
            assert [e.step for e in events] == list(range(steps))
            assert all(math.isclose(e.value, means[(task, optimizer, e.step)], rel_tol=1e-6) for e in events)


# -- the plain path ---------------------------------------------------------------------------------------------------


def test_optimizers_without_a_twin_join_by_name_through_the_plain_loop(tmp_path: Path, registry: None) -> None:
    envs.register_optimizer("plain_sgd", PlainSGD)
    envs.register_optimizer("fixed_sgd", PlainSGD, tunable_lr=False, lr=0.01)  # like a learned optimizer
    cfg = tiny(tmp_path / "run", optimizers=["sgd", "plain_sgd", "fixed_sgd", "adam"])
    run, tasks = compute_results(cfg, progress=False)
    for task in tasks:
        sgd, plain, fixed, _ = task.optimizers
        assert (sgd.path, plain.path, fixed.path) == ("batched", "plain", "plain")
        assert sgd.lr == plain.lr and fixed.tuning is None and fixed.lr is None
        np.testing.assert_allclose(plain.curves, sgd.curves, rtol=1e-5)
        assert fixed.final.n == cfg.eval_seeds and fixed.paired is not None
    fixed_records = [r for r in run.records("unit") if r["optimizer"] == "fixed_sgd"]
    assert {r["phase"] for r in fixed_records} == {"eval"} and {r["lr"] for r in fixed_records} == {None}


def test_batched_and_plain_harness_runs_agree(tmp_path: Path) -> None:
    batched = compute_results(tiny(tmp_path / "a"), progress=False)[1]
    plain = compute_results(tiny(tmp_path / "b", batched=False), progress=False)[1]
    for task_b, task_p in zip(batched, plain):
        for row_b, row_p in zip(task_b.optimizers, task_p.optimizers):
            assert (row_b.path, row_p.path) == ("batched", "plain")
            assert row_b.lr == row_p.lr
            np.testing.assert_allclose(row_b.curves, row_p.curves, rtol=1e-5)


# -- configs and bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_name_valid_tasks_and_optimizers(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(CompareConfig, path)
    monkeypatch.chdir(tmp_path)  # the ablation configs name checkpoints that scripts/ablation.sh trains: stand-ins
    for options in cfg.optimizer_options.values():
        if "checkpoint" in options and options["checkpoint"] not in list_pretrained():  # shipped rules load as they are
            Path(options["checkpoint"]).parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(options["checkpoint"], CoordinateLSTM())
    plan = make_plan(cfg)
    assert set(plan.tasks) == set(cfg.tasks) and cfg.reference in cfg.optimizers
    # every tuned baseline runs batched; learned optimizers (the ablation configs) run in plain loops
    assert all(c.functional is not None for c in plan.contenders if c.registry != "learned")
    assert len(cfg.lr_grid) >= 9 and cfg.lr_grid[0] == 1e-4


def test_digits_config_holds_the_issue_variants() -> None:
    cfg = load_config(CompareConfig, CONFIGS / "digits_mlp.yaml")
    held_out = [t for t in cfg.tasks.values() if t.held_out]
    assert [t for t in cfg.tasks.values() if not t.held_out][0].options["width"] == 20
    assert {200} <= {t.steps for t in held_out}
    assert {t.options.get("width") for t in held_out} >= {40}
    assert {t.options.get("depth") for t in held_out} >= {2}
    assert {t.options.get("activation") for t in held_out} >= {"relu"}


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["optimizers=[sgd,adamm]"],
            "unknown optimizer 'adamm'; valid optimizers: adam, adamw, adamw_cosine, learned, momentum",
        ),
        (["tasks.quadratic.name=quadratik"], "unknown task 'quadratik'"),
        (["tasks.quadratic.options.dimm=3"], "unknown option(s) 'dimm' for task 'quadratic'"),
        (["tuning_seedz=3"], "bad config at 'tuning_seedz'"),
        (["tasks.quadratic.stepz=3"], "bad config at 'tasks.quadratic.stepz'"),
        (["reference=rmsprop", "optimizers=[sgd,adam]"], "reference='rmsprop' is not among optimizers"),
        (["eval_seed_offset=3"], "overlap tuning seeds"),
        (["lr_grid=[0.1,-1]"], "lr_grid must be a non-empty list of finite numbers in (0, inf)"),
        (["imports=[no_such_module_xyz]"], "cannot import 'no_such_module_xyz'"),
    ],
)
def test_bad_input_is_one_clear_message_and_writes_nothing(
    overrides: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["compare", "compare/quadratic.yaml", f"out={out}", *overrides]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_help_lists_the_compare_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = capsys.readouterr().out
    for key in ("tasks", "optimizers", "lr_grid", "tuning_seeds", "eval_seeds", "final_window", "timing", "out"):
        assert f"{key} = " in out
