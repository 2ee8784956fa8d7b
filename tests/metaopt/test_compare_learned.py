"""The learned optimizer in the comparison harness: named by checkpoint, never tuned, paired with the baselines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import envs
from envs.tooling.runs import Run
from metaopt import CoordinateLSTM, save_checkpoint
from metaopt.cli import main
from metaopt.commands import run_compare
from metaopt.compare import CompareConfig, CompareTaskConfig, harness
from metaopt.compare.runner import RunSpec, run_plain


def test_compare_runs_the_learned_checkpoint_beside_tuned_adam(tmp_path: Path) -> None:
    checkpoint = tmp_path / "net.pt"
    save_checkpoint(checkpoint, CoordinateLSTM())
    cfg = CompareConfig(
        tasks={"quad": CompareTaskConfig(name="quadratic", steps=10)},
        optimizers=["adam", "learned"],
        optimizer_options={"learned": {"checkpoint": str(checkpoint)}},
        lr_grid=[0.01, 0.1],
        tuning_seeds=1,
        eval_seeds=2,
        final_window=2,
        timing=False,
        device="cpu",
        out=str(tmp_path / "run"),
    )
    rows = {row["optimizer"]: row for row in run_compare(cfg, progress=False)["results"]}
    assert rows["adam"]["tuned"] and not rows["learned"]["tuned"]
    assert rows["learned"]["eval_seeds"] == 2 and rows["learned"]["eval_diverged"] == 0
    task = envs.make_task("quadratic")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # the harness's thread count: float sums may differ in the last bit otherwise
    try:
        for record in Run(tmp_path / "run").records("unit"):
            if record["optimizer"] == "learned" and record["phase"] == "eval":
                own = run_plain(task, RunSpec(record["seed"], None), 10, "learned", {"checkpoint": str(checkpoint)})
                assert [float(v) for v in record["losses"]] == own.losses  # the harness's run is the plain loop's
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["text", "missing", "other_rule"])
def test_a_broken_learned_checkpoint_stops_compare_before_any_baseline_runs(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "best.pt"
    if kind == "text":
        checkpoint.write_text("not a checkpoint\n")
    elif kind == "other_rule":
        save_checkpoint(checkpoint, CoordinateLSTM())
        payload = torch.load(checkpoint, weights_only=True)
        torch.save({**payload, "state_dict": {**payload["state_dict"], "extra": torch.ones(1)}}, checkpoint)

    def no_runs(*args: object, **kwargs: object) -> None:
        raise AssertionError("a baseline ran before the learned checkpoint was checked")

    monkeypatch.setattr(harness, "run_batched", no_runs)
    monkeypatch.setattr(harness, "run_plain", no_runs)
    out = tmp_path / "run"
    argv = ["compare", "compare/quadratic.yaml", "optimizers=[sgd,adam,learned]", f"out={out}",
            f"optimizer_options={{learned: {{checkpoint: {checkpoint}}}}}"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("metaopt compare: error: optimizer 'learned' cannot be built") and err.count("\n") == 1
    assert str(checkpoint) in err
    assert not out.exists()  # no run directory, so no records


@pytest.mark.parametrize("warmup", [30, 29])
def test_a_warmup_is_checked_against_the_shortest_task(
    warmup: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A schedule is built with the shortest run's horizon before any run: a warmup as long fails, a shorter one not."""
    ran: list[str] = []

    def no_runs(*args: object, **kwargs: object) -> None:
        ran.append("run")
        raise KeyboardInterrupt  # stop at the first run: the preflight has passed by then

    monkeypatch.setattr(harness, "run_batched", no_runs)
    monkeypatch.setattr(harness, "run_plain", no_runs)
    out = tmp_path / "run"
    argv = ["compare", "compare/quadratic.yaml", "optimizers=[adam,warm]", f"out={out}", "tasks.quadratic.steps=30",
            "aliases={warm: adamw_cosine}", f"optimizer_options={{warm: {{warmup_steps: {warmup}}}}}"]  # fmt: skip
    if warmup == 30:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("metaopt compare: error: optimizer 'warm' cannot be built") and err.count("\n") == 1
        assert "warmup_steps must be an integer in [0, total_steps) = [0, 30), got 30" in err
        assert not out.exists() and not ran
    else:  # the CLI stops as on Ctrl-C, after the first run began: the preflight had passed
        assert main(argv) != 2
        assert ran
