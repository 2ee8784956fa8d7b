"""``geodesics compare-paths`` end to end on a tiny config: every finder on the same endpoints, one record per
(pair, finder), the tables and plots, and a killed run that resumes to what an uninterrupted run writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from envs.tooling.config import load_config
from geodesics import BeadString
from geodesics.cli import main
from geodesics.commands.compare_paths import ALL_FINDERS, ComparePathsConfig, run_compare_paths, summarize

TINY = ["device=cpu", "task.name=permutation", "threshold=0.01", "seed=1", "pairs=1", "align=weight_matching",
        "dss.max_rounds=2", "dss.max_steps=100", "dss.max_evaluations=4000", "dss.max_seconds=0"]  # fmt: skip
CONFIG = "geodesics/compare_paths/poly_cubic.yaml"


def rows(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in csv.DictReader(path.open())]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "run"
    assert main(["compare-paths", CONFIG, f"out={out}", *TINY]) == 0
    return out


def test_every_finder_runs_on_the_same_endpoints_and_is_tabled(run_dir: Path) -> None:
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert [r["finder"] for r in records] == ALL_FINDERS and {r["pair"] for r in records} == {0}
    strings = [BeadString.load(run_dir / r["string"]) for r in records]
    for string, record in zip(strings, records):
        assert string.method == record["finder"]
        assert torch.equal(string.beads[0], strings[0].beads[0]) and torch.equal(string.beads[-1], strings[0].beads[-1])
        assert record["barrier"] == pytest.approx(string.max_loss_upper - string.endpoint_loss)
        assert record["evaluations"] >= record["gradients"] > 0 or record["num_beads"] == 2
        assert record["evaluations"] <= 4000 + 20_000  # the budget, and at most one round and certification more
        assert record["connected"] == bool((string.segment_upper <= 0.01).all()) and (
            record["connected"] or record["reason"]
        )
    assert records[0]["connected"]  # greedy DSS joins the aligned pair
    assert records[0]["aligned_distance"] < records[0]["distance"]
    table = list(csv.DictReader((run_dir / "results.csv").open()))
    assert [r["finder"] for r in table] == ALL_FINDERS
    assert len(list(csv.DictReader((run_dir / "paths.csv").open()))) == 5
    report = (run_dir / "report.md").read_text()
    assert "| finder | connected | barrier | normalized length | points |" in report and "nan" not in report
    assert (run_dir / "plots" / "pair000.png").stat().st_size > 5_000
    assert (run_dir / "endpoints" / "pair000.pt").is_file()


def test_a_killed_run_resumes_to_the_uninterrupted_result(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"

    class Killed(Exception):
        pass

    def kill(pair: int, finder: str) -> None:
        if finder == "constrained":
            raise Killed

    cfg = load_config(ComparePathsConfig, CONFIG, [f"out={out}", *TINY])
    with pytest.raises(Killed):
        run_compare_paths(cfg, on_unit=kill)  # dies after greedy and constrained
    assert len((out / "records.jsonl").read_text().splitlines()) == 2
    assert main(["compare-paths", CONFIG, f"out={out}", *TINY]) == 0  # the same command continues
    assert len((out / "records.jsonl").read_text().splitlines()) == 5
    for name in ("paths.csv", "results.csv"):
        assert rows(out / name) == rows(run_dir / name), name
    for finder in ALL_FINDERS:
        resumed = BeadString.load(out / "strings" / f"pair000-{finder}.pt")
        whole = BeadString.load(run_dir / "strings" / f"pair000-{finder}.pt")
        assert torch.equal(resumed.beads, whole.beads), finder


def test_pairs_whose_endpoints_do_not_train_are_recorded_not_connected(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["compare-paths", CONFIG, f"out={out}", *TINY, "seed=0", "finders=[greedy,neb]", "train_steps=20"]
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["reason"].split(":")[0] for r in records] == ["endpoints", "endpoints"]
    assert summarize(records, ["greedy", "neb"])[0]["ran"] == 0
    assert "| 0 | greedy | no | – |" in (out / "report.md").read_text()


def test_finders_must_be_registered_and_named_once() -> None:
    with pytest.raises(ValueError, match="registered path finders"):
        load_config(ComparePathsConfig, CONFIG, ["finders=[greedy,fancy]"])
    with pytest.raises(ValueError, match="each path finder once"):
        load_config(ComparePathsConfig, CONFIG, ["finders=[greedy,greedy]"])
