"""``metaopt train``: meta-train a learned rule on a task family (Andrychowicz et al. 2016, section 3).

The command around :class:`~metaopt.training.MetaTrainer`: it creates the run directory (or reopens a run's with
``resume=RUN``), runs the loop, writes ``report.md`` and prints where everything is. The rule (``rule=``, default the
coordinatewise LSTM), the estimator (``estimator=``, default truncated backprop through the ``higher`` unroll) and
the objective (``objective.name=``) are chosen by name from their registries.

``resume=RUN`` continues a run from its ``checkpoints/last.pt`` with its saved config; ``metaopt train resume=RUN
episodes=N`` applies the keys given beside it to that saved config (:func:`resume_config`). Only the keys in
:data:`~metaopt.training.RESUMABLE_KEYS` may change (more episodes extend a finished run); any other difference is
refused with the keys named, before anything is written. A run whose best validation is far worse than tuned Adam
(:func:`~metaopt.training.far_worse_than_adam`) ends with a ``WARNING:`` line, in its report too.

``torchrun --nproc_per_node=N -m metaopt train CONFIG ...`` trains data-parallel: each rank unrolls its share of the
meta-batch, the meta-gradients are averaged, and rank 0 writes the run directory (see :mod:`metaopt.training.loop`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from envs.errors import ConfigError
from envs.tooling import distributed
from envs.tooling.config import load_config, to_yaml
from envs.tooling.runs import Run
from metaopt.training import FAR_WORSE_RATIO, RESUMABLE_KEYS, MetaTrainer, TrainConfig
from metaopt.training.config import output_scale_hint
from metaopt.training.preflight import preflight

__all__ = ["divergence_warning", "resume_config", "run_train"]

_NOT_COMPARED = ("resume", "out", "name")
"""Keys that do not make a resumed run another run: where it lives and what it is called."""


def resume_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config ``metaopt train resume=RUN key=value ...`` runs: the run's saved config with ``overrides`` on top.

    Args:
        run_dir: the run directory (holding ``config.yaml``).
        overrides: ``key=value`` changes (only :data:`~metaopt.training.RESUMABLE_KEYS` are then accepted).
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); pass the folder a command printed")
    return load_config(TrainConfig, path, [f"resume={run_dir}", *overrides])


def _open_resumed(cfg: TrainConfig) -> tuple[Run, TrainConfig, list[str]]:
    """The run ``cfg.resume`` names (locked), its config with the accepted changes, and the keys that changed.

    Raises:
        ConfigError: ``cfg`` differs from the saved config in a key that ``resume=`` may not change.
    """
    assert cfg.resume is not None
    saved = load_config(TrainConfig, Run.open(cfg.resume).config_path)
    changed = [
        f.name
        for f in dataclasses.fields(TrainConfig)
        if f.name not in _NOT_COMPARED and getattr(saved, f.name) != getattr(cfg, f.name)
    ]
    refused = [key for key in changed if key not in RESUMABLE_KEYS]
    if refused:
        raise ConfigError(
            f"resume={cfg.resume} cannot change {', '.join(refused)} (the saved config differs there, and that would "
            f"make it another run); resume changes only {', '.join(sorted(RESUMABLE_KEYS))}. Drop those keys to "
            "continue the run as it was, or start a new run with out=<new folder>"
        )
    run = Run.create(saved.name, saved, cfg.resume, shared=True)  # the saved config as it is: reopens it, locks it
    return run, dataclasses.replace(saved, **{key: getattr(cfg, key) for key in changed}), changed


def run_train(cfg: TrainConfig, callback: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Meta-train as ``cfg`` says; write checkpoints, records, TensorBoard and a report; return the final metrics.

    Args:
        cfg: the configuration; with ``resume=RUN``, the run's saved config with the accepted changes is used (build
            it with :func:`resume_config`).
        callback: called with the episode count after each episode's checkpoint is written (tests use it to
            interrupt a run).

    Raises:
        ConfigError: ``resume=`` with a change it does not accept, or fewer episodes than the run has done.
    """
    changed: list[str] = []
    preflight(cfg)  # what the config cannot check by itself, before anything is written
    if cfg.resume:
        run, cfg, changed = _open_resumed(cfg)
    else:
        task_names = "+".join(dict.fromkeys(t.name for t in cfg.tasks))
        run = Run.create(f"{cfg.name}-{task_names}", cfg, cfg.out, shared=True)
    main = distributed.is_main()
    run.announce()
    with run:
        trainer = MetaTrainer(cfg, run, callback)
        if trainer.restore():
            if trainer.progress.episode > cfg.episodes:
                raise ConfigError(
                    f"episodes={cfg.episodes} is fewer than the {trainer.progress.episode} episodes {run.path} has "
                    "done; resume can extend a run, not shorten it"
                )
            if main:
                print(f"continuing from episode {trainer.progress.episode} of {cfg.episodes}")
        if changed and main:
            run.write_text("config.yaml", to_yaml(cfg))  # a later resume, or a rerun with out=, continues from here
            print(f"resuming with {', '.join(f'{key}={getattr(cfg, key)}' for key in changed)}")
        if main and getattr(cfg.estimator_config(), "compile", False) is True:
            print("compile: each optimizee structure compiles on its first truncation (about a minute with an empty "
                  "inductor cache, less once it holds the structure)")  # fmt: skip
        distributed.barrier()  # every rank restored before rank 0 writes last.pt again
        metrics = trainer.train()
        if not main:
            return metrics
        warning = divergence_warning(cfg, metrics)
        run.write_text("report.md", _report(cfg, run, metrics, warning))
    print(
        f"best validation final loss {metrics['best_val_loss']:.4g} (episode {metrics['best_episode']}) vs tuned "
        f"Adam {metrics['adam_val_loss']:.4g}; skipped meta-steps: {metrics['skipped_steps']}"
    )
    if warning:
        print(warning)
    print(f"checkpoints: {run.path / 'checkpoints'}")
    return metrics


SHORT_RUN_META_STEPS = 100
"""Fewer meta-steps than this (episodes x steps / truncation) rarely move a rule far from its start."""


def divergence_warning(cfg: TrainConfig, metrics: dict[str, Any]) -> str | None:
    """The ``WARNING:`` line of a run whose best validation is far worse than tuned Adam's, else None.

    A short run (fewer than :data:`SHORT_RUN_META_STEPS` meta-steps, e.g. a smoke test) is named as the likely cause;
    otherwise the line points at the meta-optimizer's settings.
    """
    if not metrics["far_worse_than_adam"]:
        return None
    found = (
        f"WARNING: meta-training went wrong: the best validation final loss {metrics['best_val_loss']:.4g} is more "
        f"than {FAR_WORSE_RATIO:g}x tuned Adam's {metrics['adam_val_loss']:.4g}, so checkpoints/best.pt is not worth "
        "using; "
    )
    meta_steps = cfg.episodes * (cfg.steps // cfg.truncation)
    scale = output_scale_hint(cfg)
    settings = (
        f"lower meta_lr (now {cfg.meta_lr:g}), set clip_grad_norm (now {cfg.clip_grad_norm:g}) or lower {scale}, "
        "and look at meta/grad_norm in TensorBoard"
    )
    if meta_steps < SHORT_RUN_META_STEPS:
        return found + (
            f"the run was short ({cfg.episodes} episodes, {meta_steps} meta-steps), the likely cause: a rule moves "
            f"little from its start in fewer than {SHORT_RUN_META_STEPS} meta-steps; run more episodes "
            f"(resume=RUN episodes=N continues it), and if a longer run ends here too, {settings}"
        )
    return found + settings


def _report(cfg: TrainConfig, run: Run, metrics: dict[str, Any], warning: str | None) -> str:
    rows = [
        f"| {r['episode']} | {r['meta_step']} | {r['learned_final_loss']:.4g} | {r['adam_final_loss']:.4g} |"
        for r in run.records("episode")
        if "learned_final_loss" in r
    ]
    summary = "\n".join(f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    return (
        f"# metaopt train: {', '.join(t.name for t in cfg.tasks)}\n\n"
        + (f"{warning}\n\n" if warning else "")
        + f"| metric | value |\n|---|---|\n{summary}\n\n"
        "## Validation (mean final loss on held-out seeds)\n\n| episode | meta-step | learned | tuned Adam |\n"
        "|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )
