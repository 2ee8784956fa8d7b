"""The learned optimizer in the comparison harness: named by checkpoint, never tuned, paired with the baselines."""

from __future__ import annotations

from pathlib import Path

import torch

import envs
from envs.tooling.runs import Run
from metaopt import CoordinateLSTM, save_checkpoint
from metaopt.commands import run_compare
from metaopt.compare import CompareConfig, CompareTaskConfig
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
