"""Bad values at the command line: exit code 2, one message naming the key and its valid range, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaopt.cli import main

TRAIN = ["train", "metaopt/quadratic.yaml"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*TRAIN, "steps=0"], "steps must be an integer in [1, inf), got 0"),
        ([*TRAIN, "truncation=0"], "truncation must be an integer in [1, inf), got 0"),
        ([*TRAIN, "episodes=-1"], "episodes must be an integer in [1, inf), got -1"),
        ([*TRAIN, "meta_batch=0"], "meta_batch must be an integer in [1, inf), got 0"),
        ([*TRAIN, "meta_lr=0"], "meta_lr must be a finite number in (0, inf), got 0"),
        ([*TRAIN, "meta_lr=nan"], "meta_lr must be a finite number in (0, inf), got nan"),
        ([*TRAIN, "clip_grad_norm=-1"], "clip_grad_norm must be a finite number in [0, inf), got -1"),
        ([*TRAIN, "clip_grad_norm=inf"], "clip_grad_norm must be a finite number in [0, inf), got inf"),
        ([*TRAIN, "val_seeds=0"], "val_seeds must be an integer in [1, 100000], got 0"),
        ([*TRAIN, "tune_seeds=800001"], "tune_seeds must be an integer in [1, 800000], got 800001"),
        ([*TRAIN, "lr_grid=[0.1,-1]"], "lr_grid must be a non-empty list of finite numbers in (0, inf)"),
        ([*TRAIN, "lr_grid=[]"], "lr_grid must be a non-empty list of finite numbers in (0, inf), got []"),
        ([*TRAIN, "final_window=101"], "final_window must be an integer in [1, 100], got 101"),
        ([*TRAIN, "seed=-1"], "seed must be an integer in [0, inf), got -1"),
        ([*TRAIN, "max_skips=0"], "max_skips must be an integer in [1, inf), got 0"),
        ([*TRAIN, "rule.options.output_scale=0"], "rule.options.output_scale must be a finite number in (0, inf)"),
        ([*TRAIN, "rule.options.hidden_size=0"], "rule.options.hidden_size must be an integer in [1, inf), got 0"),
        ([*TRAIN, "estimator=es", "estimator.options={sigma: 0}"], "estimator.options.sigma must be a finite number"),
        ([*TRAIN, "rule=mlp", "rule.options={hidden_size: 1}"], "rule.options.hidden_size must be an integer in [2"),
        (
            [*TRAIN, "objective.name=teacher", "objective.options.loss_weight=-1"],
            "objective.options.loss_weight must be a finite number in [0, inf), got -1",
        ),
        ([*TRAIN, "objective.options.log=maybe"], "objective.options.log must be true or false, got 'maybe'"),
        ([*TRAIN, "objective.options.log=1"], "objective.options.log must be true or false, got 1"),
        ([*TRAIN, "rule=tiny", "rule.options.mup_cap=often"], "rule.options.mup_cap must be true or false, got 'oft"),
        (["targets", "steps=0"], "steps must be an integer in [1, inf), got 0"),
        (["targets", "seeds=0"], "seeds must be an integer in [1, inf), got 0"),
        (["targets", "lr=-0.1"], "lr must be a finite number in [0, inf), got -0.1"),
        (["targets", "window=101"], "window must be an integer in [1, 100], got 101"),
        (["targets", "stride=0"], "stride must be an integer in [1, inf), got 0"),
        (["targets", "slack=nan"], "slack must be a finite number in [0, inf), got nan"),
        (["targets", "dss.max_steps=0"], "dss.max_steps must be an integer in [1, inf), got 0"),
        (["compare", "lr_grid=[0.1,nan]"], "lr_grid must be a non-empty list of finite numbers in (0, inf)"),
        (["compare", "eval_seeds=0"], "eval_seeds must be an integer in [1, inf), got 0"),
        (["compare", "tuning_seeds=-2"], "tuning_seeds must be an integer in [1, inf), got -2"),
        (["compare", "eval_seed_offset=-1"], "eval_seed_offset must be an integer in [0, inf), got -1"),
        (["compare", "final_window=0"], "final_window must be an integer in [1, inf), got 0"),
        (["compare", "threads=-1"], "threads must be an integer in [0, inf), got -1"),
        (["compare", "tasks.quadratic.steps=0"], "steps must be an integer in [1, inf), got 0"),
        (["compare", "tasks.quadratic.targets=[0.1,-1]"], "targets must be a non-empty list of finite numbers"),
        (["quickstart", "train.meta_lr=0"], "bad value for train.meta_lr: train.meta_lr must be a finite number"),
        (["quickstart", "train.steps=0"], "train.steps must be an integer in [1, inf), got 0"),
        (["quickstart", "targets.slack=-1"], "targets.slack must be a finite number in [0, inf), got -1"),
        (["quickstart", "compare.eval_seeds=0"], "compare.eval_seeds must be an integer in [1, inf), got 0"),
        (["quickstart", "train.rule.options.p=0"], "train.rule.options.p must be a finite number in (0, inf), got 0"),
    ],
)
def test_bad_values_exit_2_with_the_key_and_range_and_write_nothing(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main([*argv, f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert err.startswith(f"metaopt {argv[0]}: error: bad value for ")
    assert not out.exists()
