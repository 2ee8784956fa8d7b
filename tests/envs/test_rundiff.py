"""The run comparison finds any changed number and ignores only wall-clock figures and the run's location."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from envs.tooling.rundiff import diff_runs

REPORT = """# run

3 shards, 15 windows; 2.3 s of work, 393.2 pairs per minute.

| L0 | beads | seconds |
|---:|---:|---:|
| 0.2 | 9.00 | 4.6 |

| key | value |
|---|---|
| seconds_this_session | 1.30 |
| run_dir | /tmp/a |
| best | 0.5 |
"""


def make_run(path: Path) -> Path:
    path.mkdir()
    (path / "config.yaml").write_text("seed: 1\nout: /tmp/a\n")
    records = [{"kind": "pair", "pair": 0, "beads": 9, "seconds": 1.5}, {"kind": "pair", "pair": 1, "beads": 7}]
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "results.csv").write_text("threshold,beads,seconds\n0.2,9.0,4.6\n")
    (path / "report.md").write_text(REPORT)
    torch.save({"beads": torch.linspace(0, 1, 5), "history": [{"seconds": 2.0}]}, path / "string.pt")
    return path


def test_identical_runs_and_wall_clock_changes_compare_equal(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert diff_runs(a, b) == []
    lines = (b / "records.jsonl").read_text().splitlines()
    (b / "records.jsonl").write_text("\n".join(reversed(lines)).replace('"seconds": 1.5', '"seconds": 9.9') + "\n")
    (b / "results.csv").write_text("threshold,beads,seconds\n0.2,9.0,7.7\n")
    report = REPORT.replace("2.3 s", "5.1 s").replace("393.2 pairs", "120.0 pairs").replace("| 4.6 |", "| 8.1 |")
    (b / "report.md").write_text(report.replace("1.30", "2.00").replace("/tmp/a", "/tmp/b"))
    torch.save({"beads": torch.linspace(0, 1, 5), "history": [{"seconds": 3.0}]}, b / "string.pt")
    (b / "config.yaml").write_text("seed: 1\nout: /tmp/b\n")
    assert diff_runs(a, b) == []


def test_the_speed_up_in_wall_time_is_a_wall_clock_figure(tmp_path: Path) -> None:
    """A comparison's speed-up in wall time comes from timings: two runs that differ only there compare equal, in
    ``results.csv`` and in both tables of the report, while its speed-up in steps is still compared."""
    table = (
        "| optimizer | speed-up (adam-equivalent steps) | speed-up in wall time (plain) |\n|---|---|---|\n"
        "| sgd | 2× | {} |\n\n"
        "| optimizer | speed-up IQM (adam-equivalent steps) | wall-clock speed-up IQM (plain step) |\n|---|---|---|\n"
        "| sgd | 2× | {} |\n"
    )
    a = make_run(tmp_path / "a")
    (a / "results.csv").write_text("optimizer,equivalent_speedup,wall_clock_speedup\nsgd,2.0,1.07\n")
    (a / "report.md").write_text(table.format("1.07×", "1.07×"))
    b = tmp_path / "b"
    shutil.copytree(a, b)
    (b / "results.csv").write_text("optimizer,equivalent_speedup,wall_clock_speedup\nsgd,2.0,0.59\n")
    (b / "report.md").write_text(table.format("0.59×", "0.61×"))
    assert diff_runs(a, b) == []
    (b / "results.csv").write_text("optimizer,equivalent_speedup,wall_clock_speedup\nsgd,2.5,0.59\n")
    assert diff_runs(a, b) != []


def test_every_changed_number_is_found(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a")
    edits = {
        "records.jsonl": lambda p: p.write_text(p.read_text().replace('"beads": 7', '"beads": 8')),
        "results.csv": lambda p: p.write_text(p.read_text().replace("9.0", "9.5")),
        "report.md": lambda p: p.write_text(p.read_text().replace("| 0.5 |", "| 0.6 |")),
        "string.pt": lambda p: torch.save(
            {"beads": torch.linspace(0, 1, 5).nextafter(torch.tensor(2.0)), "history": [{"seconds": 2.0}]}, p
        ),  # fmt: skip
        "config.yaml": lambda p: p.write_text("seed: 2\nout: /tmp/a\n"),
    }
    for name, edit in edits.items():
        b = tmp_path / f"b-{name}"
        shutil.copytree(a, b)
        edit(b / name)
        differences = diff_runs(a, b)
        assert len(differences) == 1 and differences[0].startswith(name), (name, differences)
