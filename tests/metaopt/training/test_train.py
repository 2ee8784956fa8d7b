"""Meta-training: it lowers the meta-loss, resumes bit for bit, skips non-finite meta-gradients, speaks clearly."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import envs
from envs.errors import ConfigError
from envs.seeding import seeded
from envs.tooling.config import load_config
from metaopt import CoordinateLSTM, TrainConfig, load_net, optimizee_loss, register_objective, start_episode, unroll
from metaopt.cli import main
from metaopt.commands.train import resume_config, run_train
from metaopt.objectives import ImitationOptions, ObjectiveConfig, make_objective
from metaopt.training import FAR_WORSE_RATIO, MetaTrainingError, far_worse_than_adam
from tests.metaopt.sizes import TINY_TRAIN


def config(tmp_path: Path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, "metaopt/quadratic.yaml", [*TINY_TRAIN, f"out={tmp_path / 'run'}", *overrides])


def mean_meta_loss(net: CoordinateLSTM, seeds: range) -> float:
    task = envs.make_task("quadratic", dim=4)
    return sum(float(optimizee_loss(unroll(start_episode(task, s, net), 10)).detach()) for s in seeds) / len(seeds)


def test_configs_of_the_older_shape_load_as_today_with_one_deprecation_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("tasks: [{name: quadratic, options: {dim: 4}}]\nrule: lstm\nnet: {hidden_size: 7}\n"
                   "estimator: es\nestimator_options: {pairs: 3}\n")  # fmt: skip
    new = tmp_path / "new.yaml"
    new.write_text("tasks: [{name: quadratic, options: {dim: 4}}]\nrule: {name: lstm, options: {hidden_size: 7}}\n"
                   "estimator: {name: es, options: {pairs: 3}}\n")  # fmt: skip
    assert load_config(TrainConfig, old) == load_config(TrainConfig, new)
    assert capsys.readouterr().err.splitlines() == [
        "deprecated config keys, read as their new names: net -> rule.options, estimator_options -> estimator.options"
    ]
    legacy = load_config(TrainConfig, new, ["rule=mlp", "rule_options={hidden_size: 4}", "net.hidden_size=3"])
    assert legacy.rule.name == "mlp" and legacy.rule.options["hidden_size"] == 3  # renamed: lstm's 7 is dropped
    assert load_config(TrainConfig, new, ["rule.name=mlp"]).rule.options["hidden_size"] == 32  # mlp's default
    explicit = load_config(TrainConfig, new, ["rule.options.output_scale=0.1"])  # lstm's default, spelled out
    assert explicit == load_config(TrainConfig, new)


def test_the_objective_is_chosen_as_name_and_options_and_reads_its_older_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("tasks: [{name: quadratic, options: {dim: 4}}]\nobjective: {name: teacher, loss_weight: 0.05}\n")
    new = tmp_path / "new.yaml"
    new.write_text(
        "tasks: [{name: quadratic, options: {dim: 4}}]\nobjective: {name: teacher, options: {loss_weight: 0.05}}\n"
    )
    read = load_config(TrainConfig, new, ["targets="])
    assert load_config(TrainConfig, old, ["targets="]) == read
    assert read.objective.config_as(ImitationOptions) == ImitationOptions(loss_weight=0.05)
    with pytest.raises(TypeError, match="'teacher' has options ImitationOptions, not TrainConfig"):
        read.objective.config_as(TrainConfig)  # code reading another entry's options
    assert "objective.loss_weight -> objective.options.loss_weight" in capsys.readouterr().err
    # a saved run of the older shape spelled loss_weight out for every objective: dropped where it was never read
    plain = tmp_path / "plain.yaml"
    plain.write_text("tasks: [{name: quadratic, options: {dim: 4}}]\nobjective: {name: loss, loss_weight: 0.0}\n")
    assert load_config(TrainConfig, plain).objective == ObjectiveConfig("loss")
    with pytest.raises(ConfigError, match="objective 'loss' has no option loss_weight; its options: log"):
        load_config(TrainConfig, None, ["objective.options={loss_weight: 0.1}"])
    with pytest.raises(ConfigError, match="objective 'teacher' has no option weight; its options: loss_weight"):
        load_config(TrainConfig, None, ["objective=teacher", "objective.options={weight: 0.1}"])
    assert make_objective(ObjectiveConfig("teacher", {"loss_weight": 0.5})) is not None
    # options spelled out: the same objective however it was written (and so the same saved config)
    assert ObjectiveConfig("teacher") == ObjectiveConfig("teacher", {"loss_weight": 0.0})
    assert ObjectiveConfig("teacher").options == {"loss_weight": 0.0}


def test_meta_training_lowers_the_meta_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, "episodes=12", "meta_lr=0.01", "val_every=12")
    metrics = run_train(cfg)
    # after the first five episodes, once: how long the other seven should take
    [estimate] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("estimate:")]
    assert "for the remaining 7 episodes" in estimate
    with seeded(cfg.seed, "net"):  # how the trainer initialises its network
        initial = CoordinateLSTM(cfg.rule_config())
    trained = load_net(tmp_path / "run" / "checkpoints" / "last.pt")
    held_out = range(10)  # seeds below the validation range: never seen in training
    assert mean_meta_loss(trained, held_out) < 0.7 * mean_meta_loss(initial, held_out)
    assert metrics["meta_steps"] == 12 * 2 and metrics["skipped_steps"] == 0
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def final_state(path: Path) -> dict[str, Any]:
    return torch.load(path / "checkpoints" / "last.pt", weights_only=True)


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = config(tmp_path / "a", "episodes=4")
    run_train(straight)

    def kill_after_two(episode: int) -> None:
        if episode == 2:
            raise KeyboardInterrupt

    interrupted = config(tmp_path / "b", "episodes=4")
    with pytest.raises(KeyboardInterrupt):
        run_train(interrupted, callback=kill_after_two)
    assert final_state(tmp_path / "b" / "run")["trainer"]["progress"]["episode"] == 2
    run_train(resume_config(tmp_path / "b" / "run"))

    a, b = final_state(tmp_path / "a" / "run"), final_state(tmp_path / "b" / "run")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    adam_a, adam_b = a["trainer"]["meta_optimizer"]["state"], b["trainer"]["meta_optimizer"]["state"]
    assert all(torch.equal(adam_a[i]["exp_avg_sq"], adam_b[i]["exp_avg_sq"]) for i in adam_a)
    assert a["trainer"]["progress"] == b["trainer"]["progress"]


def nan_after(calls_ok: int) -> Any:
    calls = {"n": 0}

    def objective(trajectory: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = optimizee_loss(trajectory)
        return loss if calls["n"] > calls_ok else loss * float("nan")

    return objective


def test_non_finite_meta_gradients_are_skipped_counted_and_stop_training(tmp_path: Path) -> None:
    register_objective("nan_once", lambda cfg: nan_after(2))  # the first meta-step (2 optimizees) is NaN
    metrics = run_train(config(tmp_path / "once", "episodes=2", "objective.name=nan_once"))
    assert metrics["skipped_steps"] == 1 and metrics["meta_steps"] == 1 + 2  # the NaN episode ended early
    register_objective("nan_always", lambda cfg: nan_after(10**9))
    with pytest.raises(MetaTrainingError, match="3 meta-steps in a row.*lower meta_lr.*output_scale.*clip_grad_norm"):
        run_train(config(tmp_path / "always", "episodes=5", "objective.name=nan_always", "max_skips=3"))
    records = (tmp_path / "always" / "run" / "records.jsonl").read_text().splitlines()
    skips = [line for line in records if "skip" in line]
    assert len(skips) == 3


def test_cli_train_help_and_bad_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key in ("tasks", "rule.name", "rule.options", "estimator.name", "truncation", "meta_batch", "resume"):
        assert f"{key} = " in out
    assert "options of rule 'lstm':\n  features: str = 'log_sign'" in out  # the default rule's own options
    assert "options of estimator 'truncated_backprop':\n  optimizees: str = 'loop'" in out  # the default's too
    assert "options of objective 'loss':\n  log: bool = False" in out
    assert out.count(".options (of ") == 3  # rule, estimator, objective
    with pytest.raises(SystemExit):
        main(["train", "metaopt/quadratic.yaml", "rule.name=tiny", "estimator=pes", "--help"])
    out = capsys.readouterr().out  # the options of the entries the command line picks
    assert "options of rule 'tiny':" in out and "  learned_tensors: str = 'all'" in out
    assert "options of estimator 'pes':" in out and "options of rule 'lstm'" not in out
    assert main(["train", "metaopt/quadratic.yaml", "truncation=7"]) == 2
    assert "truncation (7) must divide steps (100)" in capsys.readouterr().err


# -- resume= with other keys ----------------------------------------------------------------------------------------


def same_weights(a: Path, b: Path) -> bool:
    x, y = final_state(a), final_state(b)
    return x["state_dict"].keys() == y["state_dict"].keys() and all(
        torch.equal(x["state_dict"][k], y["state_dict"][k]) for k in x["state_dict"]
    )


def test_resume_extends_a_finished_run_to_the_weights_of_a_longer_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    straight = tmp_path / "straight" / "run"
    run_train(config(tmp_path / "straight", "episodes=4"))
    extended = tmp_path / "extended" / "run"
    run_train(config(tmp_path / "extended", "episodes=2"))  # finished: 2 of 2 episodes
    capsys.readouterr()
    assert main(["train", f"resume={extended}", "episodes=4"]) == 0  # the CLI form of the issue
    out = capsys.readouterr().out
    assert "continuing from episode 2 of 4" in out and "resuming with episodes=4" in out
    assert final_state(extended)["trainer"]["progress"]["episode"] == 4
    assert same_weights(straight, extended)
    assert final_state(straight)["trainer"]["progress"] == final_state(extended)["trainer"]["progress"]
    assert load_config(TrainConfig, extended / "config.yaml").episodes == 4  # a later resume continues from here
    assert run_train(resume_config(extended))["episodes"] == 4  # nothing left to do: nothing refused either


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["meta_lr=0.5", "episodes=70"], "cannot change meta_lr"),  # the command: meta_lr was dropped
        (["steps=20", "truncation=10", "seed=3"], "cannot change steps, truncation, seed"),
        (["rule.options.hidden_size=3"], "cannot change rule"),
        (["episodes=1"], "episodes=1 is fewer than the 2 episodes"),
    ],
)
def test_resume_refuses_changes_it_cannot_apply_naming_the_keys(
    overrides: list[str], refused: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run_train(config(tmp_path, "episodes=2"))
    before = {p.name: p.read_bytes() for p in (*run.glob("*.*"), *(run / "checkpoints").iterdir())}
    capsys.readouterr()
    assert main(["train", f"resume={run}", *overrides]) == 2
    err = capsys.readouterr().err
    assert refused in err and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in (*run.glob("*.*"), *(run / "checkpoints").iterdir())} == before


def test_resume_with_a_config_file_that_differs_names_the_keys(tmp_path: Path) -> None:
    run_train(config(tmp_path, "episodes=2"))
    with pytest.raises(ConfigError, match="cannot change device, tasks, steps, truncation, meta_batch, val_every"):
        run_train(load_config(TrainConfig, "metaopt/quadratic.yaml", [f"resume={tmp_path / 'run'}"]))


# -- a run that went wrong says so ----------------------------------------------------------------------------------


def test_a_diverging_run_warns_in_its_output_report_and_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, "episodes=2", "meta_lr=1e6", "clip_grad_norm=0")  # the settings
    metrics = run_train(cfg)
    assert metrics["best_val_loss"] > FAR_WORSE_RATIO * metrics["adam_val_loss"]
    assert metrics["far_worse_than_adam"] is True and metrics["best_over_adam"] > FAR_WORSE_RATIO
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING:")]
    assert len(warnings) == 1 and "more than 2x tuned Adam's" in warnings[0] and "meta_lr (now 1e+06)" in warnings[0]
    report = (tmp_path / "run" / "report.md").read_text()
    assert warnings[0] in report and "| far_worse_than_adam | True |" in report
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_a_healthy_run_has_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = run_train(config(tmp_path, "episodes=2", "meta_lr=0.003"))
    assert metrics["far_worse_than_adam"] is False
    assert "WARNING" not in capsys.readouterr().out and "WARNING" not in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize(
    ("learned", "adam", "far"),
    [(2.01, 1.0, True), (2.0, 1.0, False), (1.5, 1.0, False), (math.inf, 1.0, True), (math.nan, 1.0, True),
     (0.5, -1.0, True), (-0.5, -1.0, False), (5.0, math.nan, False)],
)  # fmt: skip
def test_far_worse_means_more_than_twice_adam(learned: float, adam: float, far: bool) -> None:
    assert far_worse_than_adam(learned, adam) is far


def test_resume_loads_the_rule_strictly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_train(config(tmp_path, "episodes=2"))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    torch.save({**payload, "state_dict": {**payload["state_dict"], "cells.2.weight_ih": torch.ones(1)}}, last)
    capsys.readouterr()
    assert main(["train", f"resume={tmp_path / 'run'}", "episodes=3"]) == 2
    assert "unexpected weights: cells.2.weight_ih" in capsys.readouterr().err
