"""``metaopt train``: meta-train a learned rule on a task family (Andrychowicz et al. 2016, section 3).

The command around :class:`~metaopt.training.MetaTrainer`: it creates the run directory (or reopens a killed run's
with ``resume=RUN`` and its saved config), runs the loop, writes ``report.md`` and prints where everything is. The
rule (``rule=``, default the coordinatewise LSTM), the estimator (``estimator=``, default truncated backprop through
the ``higher`` unroll) and the objective (``objective.name=``) are chosen by name from their registries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from envs.tooling.config import load_config
from envs.tooling.runs import Run
from metaopt.training import MetaTrainer, TrainConfig

__all__ = ["run_train"]


def run_train(cfg: TrainConfig, callback: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Meta-train as ``cfg`` says; write checkpoints, records, TensorBoard and a report; return the final metrics.

    Args:
        cfg: the configuration; with ``resume=RUN`` the run's saved config is used instead.
        callback: called with the episode count after each episode's checkpoint is written (tests use it to
            interrupt a run).
    """
    if cfg.resume:
        run = Run.open(cfg.resume)
        saved = load_config(TrainConfig, run.config_path)
        ignored = [
            f.name
            for f in dataclasses.fields(TrainConfig)
            if f.name not in ("resume", "out") and getattr(saved, f.name) != getattr(cfg, f.name)
        ]
        if ignored:
            print(f"resuming {run.path} with its saved config (the given one differs in: {', '.join(ignored)})")
        cfg = saved
    else:
        task_names = "+".join(dict.fromkeys(t.name for t in cfg.tasks))
        run = Run.create(f"{cfg.name}-{task_names}", cfg, cfg.out)
    print(f"run directory: {run.path}")
    with run:
        trainer = MetaTrainer(cfg, run, callback)
        if trainer.restore():
            print(f"continuing from episode {trainer.progress.episode} of {cfg.episodes}")
        metrics = trainer.train()
        run.write_text("report.md", _report(cfg, run, metrics))
    print(
        f"best validation final loss {metrics['best_val_loss']:.4g} (episode {metrics['best_episode']}) vs tuned "
        f"Adam {metrics['adam_val_loss']:.4g}; skipped meta-steps: {metrics['skipped_steps']}"
    )
    print(f"checkpoints: {run.path / 'checkpoints'}\ntensorboard --logdir {run.path / 'tb'}")
    return metrics


def _report(cfg: TrainConfig, run: Run, metrics: dict[str, Any]) -> str:
    rows = [
        f"| {r['episode']} | {r['meta_step']} | {r['learned_final_loss']:.4g} | {r['adam_final_loss']:.4g} |"
        for r in run.records("episode")
        if "learned_final_loss" in r
    ]
    summary = "\n".join(f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    return (
        f"# metaopt train: {', '.join(t.name for t in cfg.tasks)}\n\n| metric | value |\n|---|---|\n{summary}\n\n"
        "## Validation (mean final loss on held-out seeds)\n\n| episode | meta-step | learned | tuned Adam |\n"
        "|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )
