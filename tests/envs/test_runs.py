"""Run directories: resolved config saved, records survive a torn line, atomic writes, reopen only with same config."""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.commands.fit import FitConfig
from envs.errors import ConfigError
from envs.tooling.runs import Run, atomic_write_text


def test_create_writes_config_and_records(tmp_path: Path) -> None:
    cfg = FitConfig(seed=3)
    run = Run.create("demo", cfg, root=tmp_path)
    assert run.path.parent == tmp_path and run.path.name.startswith("demo-")
    assert "seed: 3" in run.config_path.read_text()
    run.append_record({"kind": "unit", "key": 1, "value": float("nan")})
    run.append_record({"kind": "other", "key": 2})
    with open(run.records_path, "a") as f:
        f.write('{"kind": "unit", "key": 3')  # a crash in the middle of a line
    assert [r["key"] for r in run.records("unit")] == [1]
    assert run.records("unit")[0]["value"] == "nan"


def test_records_appended_after_a_torn_line_are_kept(tmp_path: Path) -> None:
    run = Run.create("demo", FitConfig(), root=tmp_path)
    run.append_records([{"kind": "unit", "key": 1}, {"kind": "unit", "key": 2}])
    with open(run.records_path, "a") as f:
        f.write('{"kind": "unit", "key": 3')  # killed in the middle of a line
    run.append_records([{"kind": "unit", "key": 4}, {"kind": "unit", "key": 5}])
    run.append_record({"kind": "unit", "key": 6})
    assert [r["key"] for r in run.records("unit")] == [1, 2, 4, 5, 6]


def test_reopen_same_config_continues_different_config_refuses(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = Run.create("demo", FitConfig(seed=1), out=str(out))
    run.append_record({"kind": "unit", "key": 1})
    again = Run.create("demo", FitConfig(seed=1), out=str(out))
    assert again.records() == run.records()
    with pytest.raises(ConfigError, match="different config.*seed.*nothing was changed"):
        Run.create("demo", FitConfig(seed=2), out=str(out))
    assert len(Run.open(out).records()) == 1


def test_open_rejects_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run directory"):
        Run.open(tmp_path)


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "report.md"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["report.md"]  # no temporary files left


def test_tensorboard_scalars_are_grouped(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with Run.create("demo", FitConfig(), root=tmp_path) as run:
        run.log_scalars("inner", {"loss": 1.5, "bad": float("nan")}, step=2)
    acc = EventAccumulator(str(run.path / "tb"))
    acc.Reload()
    assert acc.Tags()["scalars"] == ["inner/loss"]
    assert acc.Scalars("inner/loss")[0].value == 1.5


def test_resume_ignores_where_the_run_lives(tmp_path: Path) -> None:
    first = tmp_path / "a"
    run = Run.create("demo", FitConfig(seed=1, out=str(first)), out=str(first))
    run.append_record({"kind": "unit", "key": 1})
    run.close()
    moved = tmp_path / "b"
    first.rename(moved)
    again = Run.create("other-name", FitConfig(seed=1, out=str(moved), name="x"), out=str(moved))
    assert again.records() == [{"kind": "unit", "key": 1}]


def test_a_run_that_did_no_work_takes_the_new_config(tmp_path: Path) -> None:
    out = tmp_path / "run"
    Run.create("demo", FitConfig(seed=1), out=str(out)).close()  # failed before any record
    Run.create("demo", FitConfig(seed=2), out=str(out)).close()
    assert "seed: 2" in (out / "config.yaml").read_text()


def test_a_second_process_is_locked_out_and_the_lock_dies_with_the_first(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "run"
    holder = textwrap.dedent(f"""
        import sys, time
        from envs.commands.fit import FitConfig
        from envs.tooling.runs import Run
        run = Run.create("demo", FitConfig(), out={str(out)!r})
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        from envs.errors import RunLockedError

        with pytest.raises(RunLockedError, match=rf"in use by another process \(pid {proc.pid}\)"):
            Run.create("demo", FitConfig(), out=str(out))
    finally:
        proc.kill()  # kill -9: the kernel drops the lock
        proc.wait()
    Run.create("demo", FitConfig(), out=str(out)).close()


def test_a_full_disk_is_one_clear_error_and_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import errno
    import os

    from envs.errors import StorageError

    target = tmp_path / "report.md"
    atomic_write_text(target, "old")

    def full(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="no space left on the device while writing .*report.md.*rerun"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_written_files_get_the_users_normal_permissions(tmp_path: Path) -> None:
    import os
    import stat

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644


def test_a_run_saved_before_an_option_existed_resumes_while_the_option_keeps_its_default(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = Run.create("demo", FitConfig(seed=1), out=str(out))
    run.append_record({"kind": "unit", "key": 1})
    saved = (out / "config.yaml").read_text()
    assert "eval_every: 50" in saved and "options:" in saved  # a top-level option, and one of the nested task config
    older = "\n".join(line for line in saved.splitlines() if not line.startswith(("eval_every:", "  options:")))
    atomic_write_text(out / "config.yaml", older + "\n")  # as written by code without those two options
    again = Run.create("demo", FitConfig(seed=1), out=str(out))
    assert again.records() == run.records()
    with pytest.raises(ConfigError, match="different config.*eval_every"):  # a value the old run did not run with
        Run.create("demo", FitConfig(seed=1, eval_every=7), out=str(out))
