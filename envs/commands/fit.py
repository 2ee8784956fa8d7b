"""``metaopt fit``: train one task with its default recipe (or overrides) and write a run directory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from envs.task.registry import make_task
from envs.tooling.config import RunOptions, TaskConfig
from envs.tooling.runs import Run, atomic_torch_save
from envs.training.fit import fit

__all__ = ["FitConfig", "run_fit"]


@dataclass
class FitConfig(RunOptions):
    """Configuration of ``metaopt fit`` (the files under ``configs/tasks/``)."""

    task: TaskConfig = field(default_factory=TaskConfig)
    """The task and its options."""
    name: str = "fit"
    """Prefix of the run directory name."""
    optimizer: str | None = None
    """Optimizer name (``envs.list_optimizers()``); default: the task's recipe."""
    lr: float | None = None
    """Learning rate; default: the task's recipe."""
    steps: int | None = None
    """Training steps; default: the task's recipe."""
    seed: int = 0
    """Run seed: initial weights and batch order."""
    eval_every: int = 50
    """Evaluate on the evaluation set every this many steps."""


def run_fit(cfg: FitConfig) -> dict[str, Any]:
    """Train, log ``inner/`` scalars to TensorBoard, save the model and a report; return the final metrics."""
    task = make_task(cfg.task.name, device=cfg.device, dtype=cfg.dtype, **cfg.task.options).load()
    recipe = task.recipe
    steps = cfg.steps if cfg.steps is not None else recipe.steps
    run = Run.create(f"{cfg.name}-{task.name}", cfg, cfg.out)
    run.announce()
    started = time.perf_counter()
    with run, tqdm(total=steps, desc=f"fit {task.name}", unit="step", leave=False) as bar:
        problem = task.instance(cfg.seed)

        def log(step: int, loss: float, model: Any) -> None:
            bar.update(1)
            run.log_scalars("inner", {"loss": loss}, step)
            if cfg.eval_every and step % cfg.eval_every == 0:
                run.log_scalars("inner", {f"eval_{k}": v for k, v in problem.eval_metrics(model).items()}, step)

        result = fit(problem, cfg.seed, optimizer=cfg.optimizer, lr=cfg.lr, steps=steps, callback=log)
        elapsed = time.perf_counter() - started
        metrics: dict[str, Any] = {
            "task": task.name,
            "optimizer": cfg.optimizer or recipe.optimizer,
            "lr": cfg.lr if cfg.lr is not None else recipe.lr,
            "steps": result.steps,
            "diverged": result.diverged,
            "initial_loss": result.losses[0] if result.losses else float("nan"),
            "final_train_loss": result.losses[-1] if result.losses else float("nan"),
            **{f"eval_{k}": v for k, v in result.eval_metrics.items()},
            "seconds": elapsed,
        }
        atomic_torch_save(
            {"spec": problem.spec, "state_dict": result.model.state_dict()}, run.subdir("checkpoints") / "final.pt"
        )
        run.append_record({"kind": "fit", **metrics})
        rows = "\n".join(f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
        run.write_text("report.md", f"# fit {task.name}\n\n| metric | value |\n|---|---|\n{rows}\n")
    print(f"eval: {', '.join(f'{k}={v:.4g}' for k, v in result.eval_metrics.items())}")
    print(f"report: {run.path / 'report.md'}")
    return metrics
