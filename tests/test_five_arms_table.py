"""The arm table reads paired designs as paired: a shared offset between meta-training seeds cancels."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import five_arms_table  # noqa: E402


def _run(tmp_path: Path) -> Path:
    """A compare run: arms bent and chord, 3 meta-training seeds, 4 evaluation seeds; seed s shifts both alike."""
    run = tmp_path / "compare"
    run.mkdir()
    (run / "config.yaml").write_text("final_window: 1\nreference: adam\n")
    records = []
    for eval_seed in range(4):
        records.append({"optimizer": "adam", "loss": 1.0, "seed": eval_seed})
        for s in range(3):
            records.append({"optimizer": f"bent_s{s}", "loss": 1.0 + 0.5 * s - 0.1, "seed": eval_seed})
            records.append({"optimizer": f"chord_s{s}", "loss": 1.0 + 0.5 * s + 0.01 * eval_seed, "seed": eval_seed})
    fields = {"kind": "unit", "phase": "eval", "task": "t", "diverged": False}
    lines = [json.dumps({**fields, "optimizer": r["optimizer"], "seed": r["seed"], "losses": [r["loss"]],
                         "eval_loss": r["loss"]}) for r in records]  # fmt: skip
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_the_paired_contrast_removes_the_shared_seed_offset(tmp_path: Path) -> None:
    finals, _, _, reference, _ = five_arms_table.load(_run(tmp_path))
    diff, half, n = five_arms_table.paired(finals, "t", "bent", "chord", reference)
    assert n == 3 and diff == pytest.approx(-0.1 - 0.015) and half == pytest.approx(0.0, abs=1e-9)
    assert five_arms_table.by_seed(finals, "t", "bent", reference) == pytest.approx({0: -0.1, 1: 0.4, 2: 0.9})


def test_the_table_prints_the_paired_contrast_beside_the_unpaired_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert five_arms_table.main([str(_run(tmp_path)), "--arms", "bent", "chord"]) == 0
    text = capsys.readouterr().out
    assert "Arm against arm" in text and "Paired:" in text
    paired_row = text.split("Paired:")[1].splitlines()[4]
    assert paired_row.startswith("| t | -0.115 ± ") and paired_row.endswith("* |")  # excludes 0: paired, exact
    unpaired_row = text.split("Arm against arm")[1].splitlines()[4]
    assert unpaired_row.startswith("| t | -0.115 ± ") and not unpaired_row.endswith("* |")  # the offset hides it
