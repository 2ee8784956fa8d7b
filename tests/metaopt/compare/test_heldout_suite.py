"""The held-out suite config, learned arms by checkpoint name, the across-task summary, and the comparison figures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from envs.tooling.config import load_config, to_yaml
from metaopt.commands import run_compare
from metaopt.compare import CompareConfig, CompareTaskConfig
from metaopt.compare.config import learned_label
from metaopt.compare.figures import plot_task, task_title
from metaopt.compare.stats import equivalent_speedup, iqm

SUITE = Path(__file__).resolve().parents[3] / "configs" / "compare" / "heldout_suite.yaml"
FAMILY_WIDTHS, FAMILY_DEPTHS = {10, 20, 40}, {1, 2}


def test_the_suite_loads_and_holds_only_tasks_the_family_never_contains() -> None:
    cfg = load_config(CompareConfig, SUITE)
    assert len(cfg.tasks) >= 8 and all(task.held_out for task in cfg.tasks.values())
    names = [task.name for task in cfg.tasks.values()]
    assert {"charlm", "digits_cnn", "tabular_mlp"} <= set(names)
    assert {t.options["dataset"] for t in cfg.tasks.values() if t.name == "tabular_mlp"} >= {
        "wine", "breast_cancer", "iris", "diabetes"
    }  # fmt: skip
    mlps = [t for t in cfg.tasks.values() if t.name == "digits_mlp"]
    relu_other = [t for t in mlps if t.options["activation"] == "relu" and t.options["width"] not in FAMILY_WIDTHS
                  and t.options["depth"] not in FAMILY_DEPTHS]  # fmt: skip
    assert relu_other
    assert any(t.options["width"] >= 16 * 40 for t in mlps)  # 16x the family's widest
    assert any(t.steps >= 25 * 100 for t in mlps)  # 25x the meta-training horizon
    assert any(t.options.get("convs", 1) > 1 for t in cfg.tasks.values() if t.name == "digits_cnn")
    assert set(cfg.optimizers) >= {"adam", "adamw_cosine", "rmsprop", "momentum", "family-mlp-v0"}
    assert cfg.reference == "adam" and len(cfg.lr_grid) >= 9 and cfg.eval_seeds >= 10
    assert cfg.aliases["family-mlp-v0"] == "learned"
    assert cfg.optimizer_options["family-mlp-v0"] == {"checkpoint": "family-mlp-v0"}


def test_learned_arms_are_chosen_by_checkpoint_name_and_reload_unchanged(tmp_path: Path) -> None:
    cfg = load_config(CompareConfig, SUITE, ["learned=[family-v1,runs/x/checkpoints/best.pt]"])
    assert "family-mlp-v0" not in cfg.optimizers
    assert cfg.optimizers[-2:] == ["family-v1", "learned-runs_x_checkpoints_best.pt"]
    assert cfg.optimizer_options["family-v1"] == {"checkpoint": "family-v1"}
    assert cfg.optimizer_options["learned-runs_x_checkpoints_best.pt"] == {"checkpoint": "runs/x/checkpoints/best.pt"}
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg))
    again = load_config(CompareConfig, saved)  # a resolved config read back (resume) expands nothing twice
    assert again.optimizers == cfg.optimizers and again.aliases == cfg.aliases
    assert learned_label("family-mlp-v0") == "family-mlp-v0"
    with pytest.raises(ValueError, match="already among optimizers"):
        CompareConfig(tasks={}, optimizers=["adam", "family-v1"], learned=["family-v1"])


def test_equivalent_speedup_and_iqm() -> None:
    reference = np.array([8.0, 6.0, 4.0, 3.0, 2.0, 1.0])
    faster = np.array([[8.0, 3.0, 1.0, 0.5, 0.5, 0.5]])  # reaches the reference's final loss 1.0 at step 2
    assert equivalent_speedup(faster, reference, 6, 1) == pytest.approx(5 / 2)
    slower = np.array([[8.0, 7.0, 6.0, 5.0, 4.0, 3.0]])  # ends at 3.0, where the reference was at step 3
    assert equivalent_speedup(slower, reference, 6, 1) == pytest.approx(3 / 6)
    assert equivalent_speedup(reference[None], reference, 6, 1) == pytest.approx(1.0)
    assert equivalent_speedup(np.empty((0, 6)), reference, 6, 1) is None
    # a final over a window: the mean of the last two steps (1.5 for the reference)
    assert equivalent_speedup(faster, reference, 6, 2) == pytest.approx(5 / 2)
    assert iqm([1.0, 2.0, 3.0, 100.0]) == pytest.approx(2.5)  # one cut from each end of four
    assert iqm([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1e9]) == pytest.approx(3.5)
    assert iqm([5.0]) == 5.0 and np.isnan(iqm([]))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CompareConfig, list]:
    """The suite shrunk to a smoke run: two tables, 15 steps, two learning rates, two seeds each."""
    cfg = load_config(CompareConfig, SUITE, ["tuning_seeds=2", "eval_seeds=3", "final_window=3", "timing=false",
                                             "lr_grid=[0.003,0.03]", "optimizers=[adam,adamw_cosine]"])  # fmt: skip
    tasks = {label: dataclasses.replace(cfg.tasks[label], steps=15) for label in ("wine", "iris")}
    cfg = dataclasses.replace(cfg, tasks=tasks, out=str(tmp_path_factory.mktemp("heldout") / "run"))
    out = run_compare(cfg, progress=False)
    return Path(out["run_dir"]), cfg, out["tasks"]


def test_smoke_run_reports_train_and_eval_loss_paired_wins_speedups_and_their_iqm(smoke: tuple) -> None:
    run_dir, cfg, tasks = smoke
    assert cfg.optimizers == ["adam", "adamw_cosine", "family-mlp-v0"]
    report = (run_dir / "report.md").read_text()
    assert "## Across tasks" in report and "speed-up IQM (adam-equivalent steps)" in report
    assert "Δ eval vs adam, paired (wins)" in report and "final eval loss" in report
    header = (run_dir / "results.csv").read_text().splitlines()[0].split(",")
    assert {"eval_loss_mean", "eval_loss_ci95", "paired_eval_wins", "equivalent_speedup", "eval_diverged"} <= set(
        header
    )
    for task in tasks:
        rows = {row.optimizer: row for row in task.optimizers}
        assert rows["adam"].speedup == pytest.approx(1.0) and rows["adam"].paired_eval is None
        learned = rows["family-mlp-v0"]
        assert learned.tuning is None and learned.seeds == 3 and learned.paired_eval is not None
        diffs = learned.eval_by_seed - rows["adam"].eval_by_seed
        assert learned.paired_eval.wins == int((diffs < 0).sum())
        assert learned.paired_eval.difference.mean == pytest.approx(float(diffs.mean()))


def test_figure_has_a_training_and_an_evaluation_panel_with_clean_titles(smoke: tuple) -> None:
    _, cfg, tasks = smoke
    fig = plot_task(tasks[0], cfg.reference)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["training loss", "evaluation loss (held-out data)"]
    suptitle = fig.get_suptitle()
    assert suptitle.startswith("wine (tabular_mlp, dataset=wine") and "3 paired seeds" in suptitle
    curves_labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any(label.startswith("target: adam's mean final loss") for label in curves_labels)
    eval_labels = fig.axes[1].get_legend_handles_labels()[1]
    assert any(label.startswith("adam's mean evaluation loss") for label in eval_labels)
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == cfg.optimizers
    same = dataclasses.replace(tasks[0], label="charlm", config=CompareTaskConfig(name="charlm", steps=200))
    assert task_title(same) == "charlm, 200 steps"


def test_tensorboard_has_no_run_without_scalars(smoke: tuple) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, cfg, _ = smoke
    tb = run_dir / "tb"
    assert not [p for p in tb.iterdir() if p.is_file()]  # no event file at the root
    runs = [p for p in tb.iterdir() if p.is_dir()]
    assert {p.name for p in runs} == set(cfg.optimizers)
    for path in runs:
        acc = EventAccumulator(str(path))
        acc.Reload()
        assert acc.Tags()["scalars"], path.name
    acc = EventAccumulator(str(tb / cfg.reference))
    acc.Reload()
    assert acc.Tags()["tensors"]  # the config and report text live beside the reference's scalars


def test_the_development_suite_runs_its_synthetic_tables_end_to_end(tmp_path: Path) -> None:
    dev = SUITE.parent / "dev_suite.yaml"
    cfg = load_config(CompareConfig, dev, ["tuning_seeds=2", "eval_seeds=3", "final_window=3", "lr_grid=[0.003,0.03]"])
    assert cfg.optimizers == ["adam", "family-v3"] and cfg.reference == "adam" and cfg.eval_seeds == 3
    tasks = {label: dataclasses.replace(cfg.tasks[label], steps=15) for label in ("moons", "friedman1")}
    cfg = dataclasses.replace(cfg, tasks=tasks, out=str(tmp_path / "run"))
    out = run_compare(cfg, progress=False)
    for task in out["tasks"]:
        rows = {row.optimizer: row for row in task.optimizers}
        assert rows["family-v3"].paired_eval is not None and rows["family-v3"].seeds == 3
        assert np.isfinite(rows["adam"].eval_by_seed).all()


def test_a_learned_entry_carries_load_time_options_after_a_colon(tmp_path: Path) -> None:
    from metaopt.compare.config import split_learned

    assert split_learned("family-v3") == ("family-v3", {})
    assert split_learned("runs/a:b/best.pt") == ("runs/a:b/best.pt", {})  # a colon without options is part of a path
    assert split_learned("family-v3:weight_decay=0.6,adapt_rate=1e-2,mup_cap=false,ns_dtype=bfloat16") == (
        "family-v3", {"weight_decay": 0.6, "adapt_rate": 0.01, "mup_cap": False, "ns_dtype": "bfloat16"}
    )  # fmt: skip
    assert split_learned("runs/x/best.pt:ns_block=64") == ("runs/x/best.pt", {"ns_block": 64})
    with pytest.raises(ValueError, match="has option 'oops'; write key=value"):
        split_learned("family-v3:weight_decay=0.6,oops")
    cfg = load_config(
        CompareConfig, SUITE.parent / "dev_suite.yaml", ["learned=['family-v3:weight_decay=0.6,adapt_rate=0.03']"]
    )
    label = "learned-family-v3_weight_decay_0.6_adapt_rate_0.03"
    assert cfg.optimizers == ["adam", label]
    assert cfg.optimizer_options[label] == {
        "checkpoint": "family-v3",
        "options": {"weight_decay": 0.6, "adapt_rate": 0.03},
    }
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg))
    assert load_config(CompareConfig, saved).optimizers == cfg.optimizers  # a resolved config reloads unchanged


def test_the_colon_form_runs_the_same_arm_as_an_alias_with_options(tmp_path: Path) -> None:
    overrides = ["tuning_seeds=2", "eval_seeds=2", "final_window=3", "lr_grid=[0.003,0.03]",
                 "learned=[family-v3:weight_decay=0.6,family-v3]", "optimizers=[adam,v3_decay06]",
                 "aliases={v3_decay06: learned}",
                 "optimizer_options={v3_decay06: {checkpoint: family-v3, options: {weight_decay: 0.6}}}"]  # fmt: skip
    cfg = load_config(CompareConfig, SUITE.parent / "dev_suite.yaml", overrides)
    cfg = dataclasses.replace(cfg, tasks={"moons": dataclasses.replace(cfg.tasks["moons"], steps=15)},
                              out=str(tmp_path / "run"))  # fmt: skip
    (task,) = run_compare(cfg, progress=False)["tasks"]
    rows = {row.optimizer: row for row in task.optimizers}
    colon, alias = rows["learned-family-v3_weight_decay_0.6"], rows["v3_decay06"]
    assert np.array_equal(colon.eval_by_seed, alias.eval_by_seed)
    assert not np.array_equal(colon.eval_by_seed, rows["family-v3"].eval_by_seed)  # the option took effect
