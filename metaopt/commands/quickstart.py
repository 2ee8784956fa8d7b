"""``metaopt quickstart``: the whole pipeline in one run directory, on data that ships with the package.

1. ``targets/``: Adam trains ``digits_mlp`` from a few seeds; DSS connects windows of its trajectory inside the level
   set of the evaluation loss, and the strings become geodesic target points (:mod:`metaopt.commands.targets`).
2. ``train/``: the coordinatewise LSTM is meta-trained to follow those targets plus lambda times the L2L loss
   (:mod:`metaopt.commands.train` with ``objective.name=geodesic``), validated against tuned Adam.
3. ``compare/``: the learned optimizer's best checkpoint beside tuned Adam and RMSProp on unseen seeds, in distribution
   and on a held-out variant (:mod:`metaopt.commands.compare`).

Each stage is called as a function and the top-level ``report.md`` is built from the results they return. The run
directory and the ``tensorboard --logdir <run>`` command (it shows every stage) are printed first, and ``report.md``
is written at the start, naming the stages still to come, then rewritten as each stage finishes; ``plots/`` collects
the stages' figures. The terminal gets a few lines per stage (the comparison one line per optimizer and task); the
full tables are in the report. The embedded defaults (``configs/quickstart.yaml``) are sized to finish within minutes
on a 2-core CPU; ``scale=full`` applies the file's ``full`` overrides (more seeds, more meta-training, more evaluation
seeds). Every stage is resumable: rerun with ``out=`` the run directory (also one the quickstart named itself, or one
moved elsewhere since) and finished stages are reused.
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
from envs.tooling.config import RunOptions
from envs.tooling.runs import Run, atomic_write_text
from metaopt.commands.compare import run_compare
from metaopt.commands.targets import TargetsConfig, run_targets
from metaopt.commands.train import run_train
from metaopt.compare import CompareConfig, CompareTaskConfig
from metaopt.compare.report import render_report
from metaopt.objectives import ObjectiveConfig
from metaopt.training import FAR_WORSE_RATIO, TrainConfig
from metaopt.training.config import FamilyTaskConfig

__all__ = ["QuickstartConfig", "run_quickstart"]


def _train() -> TrainConfig:
    return TrainConfig(
        tasks=[FamilyTaskConfig(name="digits_mlp")], objective=ObjectiveConfig("geodesic", {"loss_weight": 0.05})
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


STAGES = (
    ("targets", "1. Geodesic targets"),
    ("train", "2. Meta-training on the geodesic objective"),
    ("compare", "3. Comparison on unseen seeds"),
)
"""The stages in order: their folder in the run directory and their section title in the report."""


def _stage_configs(cfg: QuickstartConfig, root: Path) -> tuple[TargetsConfig, TrainConfig, CompareConfig]:
    """The three stage configs: scale overrides merged in, outputs and links between the stages filled in."""
    stages = {"targets": cfg.targets, "train": cfg.train, "compare": cfg.compare}
    merged = {}
    for key, stage in stages.items():
        node = OmegaConf.structured(stage)
        try:
            if cfg.scale == "full" and key in cfg.full:
                node = OmegaConf.merge(node, OmegaConf.create(cfg.full[key]))
            merged[key] = OmegaConf.to_object(node)
        except Exception as exc:  # omegaconf validation errors come in several types; range checks are ConfigErrors
            raise ConfigError(f"quickstart full.{key}: {exc}") from None
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


def _follow_move(stage_dir: Path, root: Path) -> None:
    """Point the paths a finished stage's saved config holds inside the quickstart's run at ``root``.

    The train stage records where the targets are and the compare stage where the checkpoint is; after the run
    directory was moved or copied (or is now named by another spelling of its path) those differ from what
    :func:`_stage_configs` gives, and the stage would refuse to continue. They always lie inside the run, so
    the saved config's old root (the parent of its ``out``) is replaced by the new one.
    """
    path = stage_dir / "config.yaml"
    if not path.is_file():
        return
    saved = OmegaConf.to_container(OmegaConf.load(path))
    old = saved.get("out") if isinstance(saved, dict) else None
    if not old or str(Path(old).parent) == str(root):
        return
    atomic_write_text(path, OmegaConf.to_yaml(_replace_prefix(saved, str(Path(old).parent), str(root))))


def _replace_prefix(value: Any, old: str, new: str) -> Any:
    """``value`` with every string path under ``old`` moved under ``new`` (dicts and lists walked)."""
    if isinstance(value, dict):
        return {key: _replace_prefix(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_prefix(item, old, new) for item in value]
    if isinstance(value, str) and (value == old or value.startswith(old + "/")):
        return new + value[len(old) :]
    return value


def run_quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    """Run (or continue) the pipeline; returns the summaries of the three stages."""
    _stage_configs(cfg, Path("run"))  # every stage's config is checked before the run directory exists
    run = Run.create(cfg.name, cfg, cfg.out)
    root = run.path.resolve()
    targets_cfg, train_cfg, compare_cfg = _stage_configs(cfg, root)
    configs: dict[str, Any] = {"targets": targets_cfg, "train": train_cfg, "compare": compare_cfg}
    for name in ("train", "compare"):
        _follow_move(root / name, root)
    print(
        f"run directory: {root}\ntensorboard --logdir {root}\nreport: {root / 'report.md'} (updated as stages finish)"
    )
    results: dict[str, dict[str, Any]] = {}
    times: dict[str, float] = {}
    functions: dict[str, Callable[[Any], dict[str, Any]]] = {
        "targets": run_targets, "train": run_train, "compare": lambda c: run_compare(c, tables=False)
    }  # fmt: skip
    started = time.perf_counter()
    with run:
        plots = run.subdir("plots")
        for name, _ in STAGES:
            run.write_text("report.md", _report(cfg, root, compare_cfg, results, times))
            print(f"\n== {name} ==")
            tick = time.perf_counter()
            results[name] = functions[name](configs[name])
            times[name] = time.perf_counter() - tick
            figures = {"targets": [root / "targets" / "plots" / "length_vs_step.png"],
                       "compare": sorted((root / "compare" / "plots").glob("*.png"))}.get(name, [])  # fmt: skip
            for figure in figures:
                shutil.copyfile(figure, plots / f"{name}-{figure.name}")
        total = time.perf_counter() - started
        run.append_record({"kind": "quickstart", "seconds": times, "scale": cfg.scale})
        run.write_text("report.md", _report(cfg, root, compare_cfg, results, times, total))
    print(f"\nreport: {root / 'report.md'}\nplots: {root / 'plots'}\ntensorboard --logdir {root}")
    return {**results, "seconds": times}


def _report(
    cfg: QuickstartConfig, root: Path, compare_cfg: CompareConfig, results: dict[str, dict[str, Any]],
    times: dict[str, float], total: float | None = None,
) -> str:  # fmt: skip
    """The pipeline's report from the results of the stages finished so far; the others are named as to come."""
    pending = [title for name, title in STAGES if name not in results]
    if pending:
        status = f"Stages finished: {len(STAGES) - len(pending)} of {len(STAGES)}; still to come: {', '.join(pending)}."
    else:
        assert total is not None
        status = (f"Wall time: {total:.0f} s (targets {times['targets']:.0f} s, meta-training {times['train']:.0f} s, "
                  f"comparison {times['compare']:.0f} s).")  # fmt: skip
    parts = [
        f"# metaopt quickstart ({cfg.scale})\n\nRun directory `{root}`; `tensorboard --logdir {root}` shows every "
        f"stage.\n\n{status}\n"
    ]
    for name, title in STAGES:
        heading = f"## {title} (`{name}/`)\n"
        parts.append(heading + ("\n" + _SECTIONS[name](results[name], compare_cfg) if name in results
                                else "\nStill to come.\n"))  # fmt: skip
    return "\n".join(parts)


def _targets_section(dataset: dict[str, Any], compare_cfg: CompareConfig) -> str:
    lengths = ", ".join(f"t={t}: {v:.3f}" for t, v in dataset["mean_normalized_length"].items())
    return (
        f"{dataset['shards']} base runs, {dataset['windows']} windows, {dataset['connected']} connected inside their "
        f"level set; {dataset['pairs_per_minute']:.0f} pairs per minute. Mean normalized length by base step: "
        f"{lengths}.\n\n![length against step](plots/targets-length_vs_step.png)\n"
    )


def _train_section(training: dict[str, Any], compare_cfg: CompareConfig) -> str:
    text = (
        f"Best validation final loss {training['best_val_loss']:.4g} (episode {training['best_episode']}) against "
        f"tuned Adam {training['adam_val_loss']:.4g}; {training['meta_steps']} meta-steps, "
        f"{training['skipped_steps']} skipped.\n"
    )
    if training["far_worse_than_adam"]:
        text += (
            f"\nWARNING: meta-training went wrong: the best validation final loss is more than {FAR_WORSE_RATIO:g}x "
            "tuned Adam's; the comparison below uses that checkpoint anyway (see `train/report.md`).\n"
        )
    return text


def _compare_section(comparison: dict[str, Any], compare_cfg: CompareConfig) -> str:
    return render_report(compare_cfg, comparison["tasks"], level=2, title=False)


_SECTIONS: dict[str, Callable[[dict[str, Any], CompareConfig], str]] = {
    "targets": _targets_section, "train": _train_section, "compare": _compare_section
}  # fmt: skip
