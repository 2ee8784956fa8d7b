"""``geodesics topology`` (the DSS paper's Section 2) end to end on tiny settings, and the task it runs on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import envs
from geodesics.cli import main

TINY = ["device=cpu", "pairs=2", "concurrent=2", "dss.max_rounds=4", "dss.max_steps=1000"]
LINEAR = ["geodesics/topology/linear.yaml", "values=[1,2]", "thresholds=[0.3,0.1]", *TINY]
RELU = ["geodesics/topology/relu_width.yaml", "values=[2,8]", "thresholds=[0.4]", *TINY]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def linear_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("topology") / "linear"
    assert main(["topology", *LINEAR, f"out={out}"]) == 0
    return out


def test_linear_networks_connect_every_pair_at_every_level(linear_dir: Path) -> None:
    rows = list(csv.DictReader((linear_dir / "results.csv").open()))
    assert sorted({(int(r["depth"]), float(r["threshold"])) for r in rows}) == [(1, 0.1), (1, 0.3), (2, 0.1), (2, 0.3)]
    for row in rows:
        assert int(row["trained"]) == int(row["pairs"]) == 2, row
        assert int(row["connected"]) == 2, row  # Proposition 2.2: connected level sets
    for depth in (1, 2):  # each value is a full sweep, with its own run directory and strings
        sub = linear_dir / f"depth-{depth}"
        assert (sub / "report.md").is_file() and len(list((sub / "strings").glob("*.pt"))) == 4
        assert "activation: identity" in (sub / "config.yaml").read_text()
    assert (linear_dir / "plots" / "topology.png").stat().st_size > 10_000
    assert list((linear_dir / "tb").iterdir())


def test_a_finished_run_does_no_new_work_when_rerun(linear_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import geodesics.commands.topology as topology

    before = {p: p.read_bytes() for p in linear_dir.rglob("records.jsonl")}
    strings = {p: p.stat().st_mtime_ns for p in linear_dir.rglob("*.pt")}

    def no_sweep(*_: object) -> None:
        raise AssertionError("a finished value was swept again")

    monkeypatch.setattr(topology, "run_sweep", no_sweep)
    assert main(["topology", *LINEAR, f"out={linear_dir}"]) == 0
    assert {p: p.read_bytes() for p in linear_dir.rglob("records.jsonl")} == before
    assert {p: p.stat().st_mtime_ns for p in linear_dir.rglob("*.pt")} == strings


def test_an_interrupted_run_resumes_where_it_stopped_and_equals_an_uninterrupted_one(
    linear_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geodesics.commands.topology as topology

    out = tmp_path / "run"
    real, swept = topology.run_sweep, []

    def sweep_then_die(cfg: object) -> object:
        swept.append(cfg.task.options["depth"])  # type: ignore[attr-defined]
        if len(swept) == 2:
            raise KeyboardInterrupt  # killed while the second value runs
        return real(cfg)

    monkeypatch.setattr(topology, "run_sweep", sweep_then_die)
    assert main(["topology", *LINEAR, f"out={out}"]) == 130
    assert [r["value"] for r in records(out / "records.jsonl")] == [1]
    assert main(["topology", *LINEAR, f"out={out}"]) == 0
    assert swept == [1, 2, 2]  # the finished value is not swept again

    def table(run: Path) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader((run / "results.csv").open())]

    assert table(out) == table(linear_dir)
    # more values on the same out= is another experiment: refused, naming the key, nothing changed
    assert main(["topology", *LINEAR, "values=[1,2,3]", f"out={out}"]) == 2
    assert [r["value"] for r in records(out / "records.jsonl")] == [1, 2]


def test_relu_width_experiment_reports_one_row_per_width(tmp_path: Path) -> None:
    out = tmp_path / "relu"
    assert main(["topology", *RELU, f"out={out}"]) == 0
    report = (out / "report.md").read_text()
    first_table = report.split("## ")[1]
    rows = [line for line in first_table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [line.split(" | ")[0] for line in rows] == ["| 2", "| 8"]
    assert "| width | params | L0 = 0.4 |" in report
    variants = records(out / "records.jsonl")
    assert [(v["value"], v["num_params"]) for v in variants] == [(2, 8 * 2 + 2 + 2 + 1), (8, 8 * 8 + 8 + 8 + 1)]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("values=[0]", "bad value for values: values must be a non-empty list of integers in [1, inf), got [0]"),
        ("values=[]", "bad value for values: values must be a non-empty list of integers"),
        ("values=[4,4]", "bad value for values: values must name each value once"),
        ("vary=activation", "bad value for vary: vary must be an integer option of task teacher_student"),
        ("pairs=0", "bad value for pairs: pairs must be an integer in [1, inf), got 0"),
    ],
)
def test_bad_values_exit_2_naming_the_key(override: str, message: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["topology", "geodesics/topology/relu_width.yaml", override, f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_identity_activation_makes_the_student_a_linear_map() -> None:
    task = envs.make_task("teacher_student", activation="identity", depth=3, bias=False, output_dim=4, teacher="linear")
    model = task.init_model(0)
    product = torch.eye(8)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            product = layer.weight @ product
    x, y = task.train_data()
    assert len([m for m in model if isinstance(m, torch.nn.Linear)]) == 4  # 3 hidden layers and the read-out
    assert torch.allclose(model(x), x @ product.T, atol=1e-5)
    assert float(y.pow(2).mean()) == pytest.approx(1.0)  # unit output power: the zero predictor has loss 1
    assert task.eval_loss(task.init_model(0)) > 0.5 > task.eval_loss(envs.fit(task, 0, steps=100).model)


def test_teacher_student_options_are_checked() -> None:
    for bad in ({"activation": "swish"}, {"teacher": "cubic"}, {"width": 0}, {"depth": -1}):
        with pytest.raises(ValueError):
            envs.make_task("teacher_student", **bad)
