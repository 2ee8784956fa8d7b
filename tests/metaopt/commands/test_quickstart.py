"""``metaopt quickstart``: a tiny pipeline (sizes overridden) runs end to end and writes its report; the scale=full
overrides really reach the stages; a bad override is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.errors import ConfigError
from envs.tooling.config import load_config
from metaopt.commands.quickstart import QuickstartConfig, _stage_configs, run_quickstart

TINY = [
    "device=cpu", "targets.seeds=2", "targets.steps=20", "targets.window=10", "targets.stride=10",
    "targets.dss.max_rounds=3", "targets.dss.max_steps=200",
    "train.steps=20", "train.episodes=2", "train.meta_batch=2", "train.val_every=2", "train.val_seeds=2",
    "train.tune_seeds=1", "train.lr_grid=[0.01,0.1]",
    "compare.tuning_seeds=1", "compare.eval_seeds=2", "compare.lr_grid=[0.01,0.1]",
    "compare.tasks.digits_mlp.steps=20", "compare.tasks.width40.steps=20",
]  # fmt: skip


def test_tiny_quickstart_runs_every_stage_and_writes_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qs"
    result = run_quickstart(load_config(QuickstartConfig, "quickstart.yaml", [*TINY, f"out={out}"]))
    printed = capsys.readouterr().out.splitlines()
    # the terminal gets a short summary, one line per optimizer and task; the tables are in the report only
    assert not [line for line in printed if line.startswith("|")], printed
    assert "  learned: final " in "\n".join(printed) and printed[-3] == f"report: {out.resolve() / 'report.md'}"
    assert len(printed) < 40, len(printed)
    assert result["targets"]["windows"] == 2 * 2  # two base runs of 20 steps: windows at t = 0 and t = 10
    assert result["train"]["meta_steps"] == 2
    report = (out / "report.md").read_text()
    for heading in (
        "1. Geodesic targets",
        "2. Meta-training",
        "3. Comparison",
        "| learned |",
        "### Held-out tasks",
        "`width40`",
    ):
        assert heading in report
    assert (out / "train" / "checkpoints" / "best.pt").is_file()
    assert {p.name for p in (out / "plots").iterdir()} == {
        "targets-length_vs_step.png", "compare-digits_mlp.png", "compare-width40.png"
    }  # fmt: skip
    assert any((out / "train" / "tb").iterdir()) and any((out / "compare" / "tb").iterdir())


def test_scale_full_merges_its_overrides_into_the_stages(tmp_path: Path) -> None:
    cfg = load_config(QuickstartConfig, "quickstart.yaml", ["scale=full", f"out={tmp_path / 'qs'}"])
    targets, train, compare = _stage_configs(cfg, tmp_path / "qs")
    assert targets.seeds == cfg.full["targets"]["seeds"] and train.episodes == cfg.full["train"]["episodes"]
    assert set(cfg.full["compare"]["tasks"]) <= set(compare.tasks) and "width40" in compare.tasks
    assert train.truncation == targets.window and train.targets == str(tmp_path / "qs" / "targets")
    assert compare.optimizer_options["learned"]["checkpoint"].endswith("train/checkpoints/best.pt")
    small_targets, _, _ = _stage_configs(load_config(QuickstartConfig, "quickstart.yaml"), tmp_path / "qs")
    assert small_targets.seeds < targets.seeds


def test_an_unknown_override_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trian"):
        load_config(QuickstartConfig, "quickstart.yaml", ["trian.episodes=3", f"out={tmp_path / 'qs'}"])
    cfg = load_config(QuickstartConfig, "quickstart.yaml", ["scale=full", f"out={tmp_path / 'qs'}"])
    cfg.full["train"] = {"episodez": 3}
    with pytest.raises(ConfigError, match="full.train"):
        _stage_configs(cfg, tmp_path / "qs")
    assert not (tmp_path / "qs").exists()


def test_device_and_dtype_reach_every_stage(tmp_path: Path) -> None:
    cfg = load_config(QuickstartConfig, "quickstart.yaml", ["device=cpu", "dtype=float64", f"out={tmp_path / 'qs'}"])
    assert all((stage.device, stage.dtype) == ("cpu", "float64") for stage in _stage_configs(cfg, tmp_path / "qs"))


def test_the_quickstart_reports_from_the_start_and_resumes_from_its_own_moved_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from metaopt.commands import quickstart

    monkeypatch.chdir(tmp_path)  # the first run names its own directory under ./runs
    seen: dict[str, str] = {}
    real_train, real_compare = quickstart.run_train, quickstart.run_compare

    def train_after_reading_the_report(cfg: object) -> dict:
        [root] = (tmp_path / "runs").iterdir()
        seen["stdout"] = capsys.readouterr().out
        seen["report"] = (root / "report.md").read_text()
        return real_train(cfg)  # type: ignore[arg-type]

    def killed(cfg: object, **options: object) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(quickstart, "run_train", train_after_reading_the_report)
    monkeypatch.setattr(quickstart, "run_compare", killed)
    with pytest.raises(KeyboardInterrupt):
        run_quickstart(load_config(QuickstartConfig, "quickstart.yaml", TINY))
    [first] = (tmp_path / "runs").iterdir()
    # before the second stage: where to look, printed first, and a report naming what is still to come
    lines = seen["stdout"].splitlines()
    assert lines[0] == f"run directory: {first.resolve()}" and lines[1] == f"tensorboard --logdir {first.resolve()}"
    assert "Stages finished: 1 of 3; still to come: 2. Meta-training" in seen["report"]
    assert "3. Comparison on unseen seeds" in seen["report"] and "windows" in seen["report"]
    report = (first / "report.md").read_text()
    assert "Stages finished: 2 of 3; still to come: 3. Comparison" in report and "Best validation" in report

    moved = tmp_path / "elsewhere" / "qs"
    moved.parent.mkdir()
    first.rename(moved)
    records = {name: (moved / name / "records.jsonl").read_bytes() for name in ("targets", "train")}
    monkeypatch.setattr(quickstart, "run_train", real_train)
    monkeypatch.setattr(quickstart, "run_compare", real_compare)
    result = run_quickstart(load_config(QuickstartConfig, "quickstart.yaml", [*TINY, f"out={moved}"]))
    assert result["train"]["episodes"] == 2 and result["compare"]["run_dir"] == str(moved / "compare")
    for name, before in records.items():  # the finished stages were reused, not redone
        assert (moved / name / "records.jsonl").read_bytes() == before, name
    report = (moved / "report.md").read_text()
    assert "still to come" not in report and "Wall time" in report and "| learned |" in report
    assert f"tensorboard --logdir {moved}" in report
