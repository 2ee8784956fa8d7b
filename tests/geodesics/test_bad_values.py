"""Bad values at the command line: exit code 2, one message naming the key and its valid range, nothing written."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import envs
import geodesics
from geodesics.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["connect", "threshold=nan"], "threshold must be a finite number in (0, inf), got nan"),
        (["connect", "threshold=-0.1"], "threshold must be a finite number in (0, inf), got -0.1"),
        (["connect", "threshold=inf"], "threshold must be a finite number in (0, inf), got inf"),
        (["connect", "dss.alpha=0"], "dss.alpha must be a finite number in (0, 1], got 0"),
        (["connect", "dss.max_steps=0"], "dss.max_steps must be an integer in [1, inf), got 0"),
        (["connect", "dss.lr=nan"], "dss.lr must be a finite number in [0, inf), got nan"),
        (["connect", "dss.max_seconds=-1"], "dss.max_seconds must be a finite number in [0, inf)"),
        (["connect", "dss.curve.num_points=1"], "dss.curve.num_points must be an integer in [2, inf), got 1"),
        (["connect", "a.seed=-3"], "a.seed must be an integer in [0, inf), got -3"),
        (["connect", "b.max_steps=-1"], "b.max_steps must be an integer in [0, inf), got -1"),
        (["sweep", "thresholds=[0.1,nan]"], "thresholds must be a non-empty list of finite numbers in (0, inf)"),
        (["sweep", "thresholds=[]"], "thresholds must be a non-empty list"),
        (["sweep", "pairs=0"], "pairs must be an integer in [1, inf), got 0"),
        (["disconnection", "threshold=0"], "threshold must be a finite number in (0, inf), got 0"),
        (["disconnection", "control.threshold=nan"], "control.threshold must be a finite number in (0, inf)"),
    ],
)
def test_bad_values_exit_2_with_the_key_and_range_and_write_nothing(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    assert main([*argv, f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_the_library_refuses_a_threshold_that_is_not_a_positive_loss() -> None:
    task = envs.make_task("quadratic")
    space = geodesics.ParamSpace(task)
    a = b = space.flatten(task.init_model(0))
    for bad in (math.nan, -0.1, 0.0, math.inf):
        with pytest.raises(ValueError, match="threshold L0 must be a finite loss > 0"):
            geodesics.connect(space, a, b, bad)
    with pytest.raises(ValueError, match="alpha must be a finite number in"):
        geodesics.DSSConfig(alpha=float("nan"))
    assert torch.equal(a, b)


def test_a_run_that_failed_before_any_work_can_be_rerun_with_new_values(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # the endpoint cannot reach L0 = 0.01 in 20 steps: exit 2 with the advice to raise the threshold ...
    assert main(["connect", "threshold=0.01", "a.max_steps=20", f"out={out}"]) == 2
    assert not (out / "records.jsonl").exists()
    # ... and following that advice with the same out= works (the directory did no work, so it takes the new config)
    assert main(["connect", "threshold=0.2", f"out={out}"]) == 0
    assert "threshold: 0.2" in (out / "config.yaml").read_text() and (out / "string.pt").is_file()
    # once it holds work, a different config is refused, naming the key
    assert main(["connect", "threshold=0.3", f"out={out}"]) == 2
