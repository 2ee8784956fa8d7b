"""Long commands print a short summary and where the full tables are, not the tables themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaopt.cli import main


def test_targets_prints_a_few_lines_and_the_report_holds_the_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "targets"
    argv = ["targets", "metaopt/targets/poly_cubic.yaml", "seeds=1", "steps=40", "window=20", "stride=20"]
    assert main([*argv, f"out={out}"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"run directory: {out}"
    assert "2 of 2 windows connected in 1 base runs" in printed
    assert any(line.startswith("normalized length: median ") for line in printed)
    assert f"report: {out / 'report.md'} (every table)" in printed
    assert len(printed) <= 8 and not any(line.startswith("|") for line in printed)  # no Markdown table rows
    assert "| phase | connected |" in (out / "report.md").read_text()
