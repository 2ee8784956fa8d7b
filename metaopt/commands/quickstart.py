"""``metaopt quickstart``: the whole pipeline in one run directory, on data that ships with the package.

1. ``targets/``: Adam trains ``digits_mlp`` from a few seeds; DSS connects windows of its trajectory inside the level
   set of the evaluation loss, and the strings become geodesic target points (:mod:`metaopt.commands.targets`).
2. ``train/``: the coordinatewise LSTM is meta-trained to follow those targets plus lambda times the L2L loss
   (:mod:`metaopt.commands.train` with ``objective.name=geodesic``), validated against tuned Adam.
3. ``compare/``: the learned optimizer's best checkpoint beside tuned Adam and RMSProp on unseen seeds, in distribution
   and on a held-out variant (:mod:`metaopt.commands.compare`).

Each stage is called as a function and the top-level ``report.md`` is built from the results they return; ``plots/``
holds their figures, and ``tensorboard --logdir <run>`` shows every stage. The embedded defaults
(``configs/quickstart.yaml``) are sized to finish within minutes on a 2-core CPU; ``scale=full`` applies the file's
``full`` overrides (more seeds, more meta-training, more evaluation seeds). Every stage is resumable: rerun with the
same ``out=`` and finished stages are reused.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from envs.errors import ConfigError
from envs.tooling.config import RunOptions, TaskConfig
from envs.tooling.runs import Run
from metaopt.commands.compare import run_compare
from metaopt.commands.targets import TargetsConfig, run_targets
from metaopt.commands.train import run_train
from metaopt.compare import CompareConfig, CompareTaskConfig
from metaopt.compare.report import render_report
from metaopt.objectives import ObjectiveConfig
from metaopt.training import TrainConfig

__all__ = ["QuickstartConfig", "run_quickstart"]


def _train() -> TrainConfig:
    return TrainConfig(
        tasks=[TaskConfig(name="digits_mlp")], objective=ObjectiveConfig(name="geodesic", loss_weight=0.05)
    )


def _compare() -> CompareConfig:
    return CompareConfig(
        tasks={"digits_mlp": CompareTaskConfig(name="digits_mlp")}, optimizers=["adam", "rmsprop", "learned"]
    )


@dataclass
class QuickstartConfig(RunOptions):
    """Configuration of ``metaopt quickstart`` (``configs/quickstart.yaml``)."""

    scale: str = "small"
    """small (minutes on a 2-core CPU) or full (the ``full`` overrides below: the real settings)."""
    name: str = "quickstart"
    """Prefix of the run directory name."""
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    """Stage 1, ``metaopt targets`` (its out= is set by the quickstart)."""
    train: TrainConfig = field(default_factory=_train)
    """Stage 2, ``metaopt train`` (its targets= and out= are set by the quickstart)."""
    compare: CompareConfig = field(default_factory=_compare)
    """Stage 3, ``metaopt compare`` (the learned optimizer's checkpoint and out= are set by the quickstart)."""
    full: dict[str, Any] = field(default_factory=dict)
    """Overrides of targets/train/compare applied when scale=full, as nested keys."""

    def __post_init__(self) -> None:
        if self.scale not in ("small", "full"):
            raise ValueError(f"scale must be small or full, got {self.scale!r}")
        unknown = sorted(set(self.full) - {"targets", "train", "compare"})
        if unknown:
            raise ValueError(f"full may override targets, train and compare only, not {', '.join(unknown)}")


def _stage_configs(cfg: QuickstartConfig, root: Path) -> tuple[TargetsConfig, TrainConfig, CompareConfig]:
    """The three stage configs: scale overrides merged in, outputs and links between the stages filled in."""
    stages = {"targets": cfg.targets, "train": cfg.train, "compare": cfg.compare}
    merged = {}
    for key, stage in stages.items():
        node = OmegaConf.structured(stage)
        if cfg.scale == "full" and key in cfg.full:
            try:
                node = OmegaConf.merge(node, OmegaConf.create(cfg.full[key]))
            except Exception as exc:  # omegaconf validation errors come in several types
                raise ConfigError(f"quickstart full.{key}: {exc}") from None
        merged[key] = OmegaConf.to_object(node)
    targets, train, compare = merged["targets"], merged["train"], merged["compare"]
    assert isinstance(targets, TargetsConfig) and isinstance(train, TrainConfig) and isinstance(compare, CompareConfig)
    for stage in (targets, train, compare):
        stage.device, stage.dtype = cfg.device, cfg.dtype
    targets.out = str(root / "targets")
    train.targets, train.out, train.truncation = str(root / "targets"), str(root / "train"), targets.window
    compare.out = str(root / "compare")
    learned = [name for name in compare.optimizers if compare.aliases.get(name, name) == "learned"]
    for name in learned:
        compare.optimizer_options[name] = {**compare.optimizer_options.get(name, {}),
                                           "checkpoint": str(root / "train" / "checkpoints" / "best.pt")}  # fmt: skip
    return targets, train, compare


def run_quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    """Run (or continue) the pipeline; returns the summaries of the three stages."""
    run = Run.create(cfg.name, cfg, cfg.out)
    root = run.path
    targets_cfg, train_cfg, compare_cfg = _stage_configs(cfg, root)
    print(f"run directory: {root}")
    started = time.perf_counter()
    times: dict[str, float] = {}

    def stage(name: str, function: Callable[[Any], dict[str, Any]], stage_cfg: Any) -> dict[str, Any]:
        print(f"\n== {name} ==")
        tick = time.perf_counter()
        result = function(stage_cfg)
        times[name] = time.perf_counter() - tick
        return result

    with run:
        dataset = stage("targets", run_targets, targets_cfg)
        training = stage("train", run_train, train_cfg)
        comparison = stage("compare", run_compare, compare_cfg)
        plots = run.subdir("plots")
        figures = [root / "targets" / "plots" / "length_vs_step.png",
                   *sorted((root / "compare" / "plots").glob("*.png"))]  # fmt: skip
        for figure in figures:
            shutil.copyfile(figure, plots / f"{figure.parent.parent.name}-{figure.name}")
        total = time.perf_counter() - started
        run.append_record({"kind": "quickstart", "seconds": times, "scale": cfg.scale})
        run.write_text("report.md", _report(cfg, compare_cfg, dataset, training, comparison, times, total))
    print(f"\nreport: {root / 'report.md'}\nplots: {root / 'plots'}\ntensorboard --logdir {root}")
    return {"targets": dataset, "train": training, "compare": comparison, "seconds": times}


def _report(
    cfg: QuickstartConfig, compare_cfg: CompareConfig, dataset: dict[str, Any], training: dict[str, Any],
    comparison: dict[str, Any], times: dict[str, float], total: float,
) -> str:  # fmt: skip
    """The pipeline's report, from the results the three stages returned (the comparison as a section)."""
    lengths = ", ".join(f"t={t}: {v:.3f}" for t, v in dataset["mean_normalized_length"].items())
    return (
        f"# metaopt quickstart ({cfg.scale})\n\n"
        f"Wall time: {total:.0f} s (targets {times['targets']:.0f} s, meta-training {times['train']:.0f} s, "
        f"comparison {times['compare']:.0f} s).\n\n"
        "## 1. Geodesic targets (`targets/`)\n\n"
        f"{dataset['shards']} base runs, {dataset['windows']} windows, {dataset['connected']} connected inside their "
        f"level set; {dataset['pairs_per_minute']:.0f} pairs per minute. Mean normalized length by base step: "
        f"{lengths}.\n\n![length against step](plots/targets-length_vs_step.png)\n\n"
        "## 2. Meta-training on the geodesic objective (`train/`)\n\n"
        f"Best validation final loss {training['best_val_loss']:.4g} (episode {training['best_episode']}) against "
        f"tuned Adam {training['adam_val_loss']:.4g}; {training['meta_steps']} meta-steps, "
        f"{training['skipped_steps']} skipped.\n\n"
        "## 3. Comparison on unseen seeds (`compare/`)\n"
        + render_report(compare_cfg, comparison["tasks"], level=2, title=False)
    )
