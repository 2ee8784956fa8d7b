"""``metaopt train``: meta-train the coordinatewise LSTM on a task family (Andrychowicz et al. 2016, section 3).

Each episode draws ``meta_batch`` fresh optimizees (task, run seed), unrolls the learned optimizer K = ``steps`` steps
in truncations of T = ``truncation``, and after each truncation takes one meta-optimizer (Adam) step on the mean of
the optimizees' meta-losses; parameters and recurrent state are carried, detached, into the next truncation. A
meta-gradient with NaN or infinite entries is skipped and counted (and the episode's optimizees are dropped); after
``max_skips`` skips in a row training stops with a message saying what to change. Every ``val_every`` episodes the
optimizer is validated on held-out seeds against Adam tuned by the comparison harness's rules
(:func:`metaopt.compare.tuned_baseline`: a log grid over tuning seeds), by the harness's final loss, the mean
training loss over the last ``final_window`` of the K steps (what meta-training minimises; the evaluation-set loss is
logged beside it).

Seeds: episode e, slot i trains on run seed ``TRAIN_SEED_BASE + e * meta_batch + i``; validation uses
``VAL_SEED_BASE + k`` and tuning ``TUNE_SEED_BASE + k``; seeds below ``VAL_SEED_BASE`` are never touched, so they are
free for final evaluation. The run directory's ``checkpoints/last.pt`` is written after every episode with everything
needed to continue (network, meta-optimizer, counters, best score, baseline); a killed run continues with
``resume=RUN`` and ends with the same weights, bit for bit on CPU, as one that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from envs.devices import resolve_device, resolve_dtype
from envs.registry import make_task, task_from_spec
from envs.seeding import generator, seeded
from envs.task import Task
from envs.tooling.config import RunOptions, TaskConfig, load_config
from envs.tooling.runs import Run
from geodesics import ParamSpace, connect
from metaopt.checkpoint import load_checkpoint, save_checkpoint
from metaopt.compare.baseline import evaluate_runs, run_final_loss, tuned_baseline
from metaopt.compare.config import DEFAULT_LR_GRID
from metaopt.geodesic import start_window
from metaopt.lstm import CoordinateLSTM, LSTMConfig
from metaopt.objectives import ObjectiveConfig, make_objective
from metaopt.targets import TargetDataset, TargetWindow
from metaopt.unroll import InnerState, start_episode, unroll

__all__ = ["TRAIN_SEED_BASE", "TUNE_SEED_BASE", "VAL_SEED_BASE", "MetaTrainingError", "TrainConfig", "run_train"]

VAL_SEED_BASE = 100_000
"""First validation seed."""
TUNE_SEED_BASE = 200_000
"""First seed used to tune the baselines' learning rates."""
TRAIN_SEED_BASE = 1_000_000
"""First meta-training seed."""


class MetaTrainingError(ValueError):
    """Meta-training cannot go on (repeated non-finite meta-gradients); the message says what to change."""


@dataclass
class TrainConfig(RunOptions):
    """Configuration of ``metaopt train`` (the files under ``configs/metaopt/``)."""

    tasks: list[TaskConfig] = field(default_factory=lambda: [TaskConfig()])
    """The task family: tasks with options, used in turn across the slots of each meta-batch."""
    name: str = "train"
    """Prefix of the run directory name."""
    net: LSTMConfig = field(default_factory=LSTMConfig)
    """Architecture of the coordinatewise LSTM."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """Meta-objective of each truncation."""
    steps: int = 100
    """K: optimizer steps per episode."""
    truncation: int = 20
    """T: steps per truncation (one meta-step each); must divide steps."""
    episodes: int = 200
    """Episodes to train; each has steps / truncation meta-steps."""
    meta_batch: int = 4
    """Optimizees per meta-step (their meta-losses are averaged)."""
    meta_lr: float = 1e-3
    """Learning rate of the meta-optimizer (Adam)."""
    clip_grad_norm: float = 1.0
    """Clip the meta-gradient to this global norm (0 disables clipping)."""
    second_order: bool = False
    """Backpropagate through the optimizee's gradients too (the paper drops these terms: false)."""
    max_skips: int = 10
    """Stop after this many consecutive meta-steps with a NaN or infinite meta-gradient."""
    val_every: int = 10
    """Validate every this many episodes (and after the last one)."""
    val_seeds: int = 10
    """Number of held-out validation seeds per task."""
    tune_seeds: int = 5
    """Number of seeds on which Adam's learning rate is tuned for validation."""
    lr_grid: list[float] = field(default_factory=lambda: list(DEFAULT_LR_GRID))
    """Adam learning rates tried for validation."""
    final_window: int = 10
    """Validation scores a run by its mean training loss over its last final_window steps (the harness's rule)."""
    seed: int = 0
    """Seed of the network's initial weights."""
    resume: str | None = None
    """Run directory of a killed run to continue with its saved config (the other options are then ignored)."""
    targets: str | None = None
    """Run directory of ``metaopt targets``: train on its windows (one meta-step of T = truncation steps from a dataset
    state theta_t per window and episode) instead of on fresh episodes; the objective is then usually geodesic."""
    warm_start: bool = False
    """With targets: warm the recurrent state up on the base optimizer's gradients before theta_t (else zero)."""
    on_policy_every: int = 0
    """With targets: every this many episodes, recompute the sampled windows' targets from the learned optimizer's own
    iterates (DSS from theta_t to where it got in T steps, inside the window's level set); 0 never."""

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("tasks is empty; name at least one task")
        if self.truncation < 1 or self.steps % self.truncation:
            raise ValueError(f"truncation ({self.truncation}) must be positive and divide steps ({self.steps})")
        for key in ("episodes", "meta_batch", "val_every", "val_seeds", "tune_seeds", "max_skips", "final_window"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.on_policy_every < 0:
            raise ValueError(f"on_policy_every must be 0 (never) or positive, got {self.on_policy_every}")
        if (self.warm_start or self.on_policy_every) and not self.targets:
            raise ValueError("warm_start and on_policy_every need targets=<run directory of metaopt targets>")
        if self.val_seeds > TUNE_SEED_BASE - VAL_SEED_BASE or self.tune_seeds > TRAIN_SEED_BASE - TUNE_SEED_BASE:
            raise ValueError("val_seeds and tune_seeds must keep the seed ranges disjoint (at most 100000 each)")


def _train_seed(episode: int, slot: int, meta_batch: int) -> int:
    return TRAIN_SEED_BASE + episode * meta_batch + slot


@dataclass
class _Progress:
    """Everything besides the network and the meta-optimizer that a resumed run needs (saved in last.pt)."""

    episode: int = 0
    meta_step: int = 0
    skipped: int = 0
    consecutive_skips: int = 0
    best_val: float = math.inf
    best_episode: int = -1
    last_val: float = math.inf
    baseline: dict[str, dict[str, float]] = field(default_factory=dict)
    on_policy: dict[int, Any] = field(default_factory=dict)
    """Window index -> its on-policy targets ``(T + 1, P)``, replacing the dataset's (kept for an exact resume)."""


class _MetaTrainer:
    """The stateful shell: owns the network, the meta-optimizer, the run directory; the maths live elsewhere."""

    def __init__(self, cfg: TrainConfig, run: Run, callback: Callable[[int], None] | None):
        self.cfg, self.run, self.callback = cfg, run, callback
        self.device, self.dtype = resolve_device(cfg.device), resolve_dtype(cfg.dtype)
        self.tasks = [make_task(t.name, device=self.device, dtype=self.dtype, **t.options) for t in cfg.tasks]
        with seeded(cfg.seed, "net"):
            self.net = CoordinateLSTM(cfg.net)
        self.net.to(device=self.device, dtype=self.dtype)
        self.meta_opt = torch.optim.Adam(self.net.parameters(), lr=cfg.meta_lr)
        self.objective = make_objective(cfg.objective)
        self.progress = _Progress()
        self.checkpoints = run.subdir("checkpoints")
        self.dataset = TargetDataset(cfg.targets) if cfg.targets else None
        if self.dataset is not None and self.dataset.window != cfg.truncation:
            raise ValueError(
                f"the targets in {cfg.targets} have windows of T = {self.dataset.window} steps but truncation is "
                f"{cfg.truncation}; set truncation={self.dataset.window}"
            )
        self._window_tasks: dict[str, Task] = {}

    # -- state --------------------------------------------------------------------------------------------------------

    def restore(self) -> bool:
        """Continue from ``checkpoints/last.pt`` if the run has one; returns whether it did."""
        path = self.checkpoints / "last.pt"
        if not path.is_file():
            return False
        payload = load_checkpoint(path)
        trainer = payload["trainer"]
        self.net.load_state_dict(payload["state_dict"])
        self.meta_opt.load_state_dict(trainer["meta_optimizer"])
        self.progress = _Progress(**trainer["progress"])
        torch.set_rng_state(trainer["rng"])
        return True

    def save_last(self) -> None:
        trainer = {
            "meta_optimizer": self.meta_opt.state_dict(),
            "progress": dataclasses.asdict(self.progress),
            "rng": torch.get_rng_state(),
        }
        save_checkpoint(self.checkpoints / "last.pt", self.net, self.info(), trainer=trainer)

    def info(self) -> dict[str, Any]:
        return {
            "tasks": [dataclasses.asdict(t) for t in self.cfg.tasks],
            "steps": self.cfg.steps,
            "episode": self.progress.episode,
            "meta_step": self.progress.meta_step,
            "val_loss": self.progress.last_val,
        }

    # -- training -----------------------------------------------------------------------------------------------------

    def episode(self) -> None:
        """One episode of meta-training.

        ``steps / truncation`` meta-steps on ``meta_batch`` fresh optimizees or, with targets, one meta-step on
        ``meta_batch`` dataset windows.
        """
        cfg, progress = self.cfg, self.progress
        if self.dataset is not None:
            inners = self.window_inners()
            truncations = 1
        else:
            inners = [
                start_episode(
                    self.tasks[slot % len(self.tasks)], _train_seed(progress.episode, slot, cfg.meta_batch), self.net
                )
                for slot in range(cfg.meta_batch)
            ]
            truncations = cfg.steps // cfg.truncation
        for _ in range(truncations):
            self.meta_opt.zero_grad(set_to_none=True)
            meta_losses, final_losses = [], []
            for inner in inners:
                trajectory = unroll(inner, cfg.truncation, first_order=not cfg.second_order)
                meta_loss = self.objective(trajectory) / cfg.meta_batch
                meta_loss.backward()
                meta_losses.append(float(meta_loss.detach()) * cfg.meta_batch)
                final_losses.append(float(trajectory.losses[-1].detach()))
            max_norm = cfg.clip_grad_norm if cfg.clip_grad_norm > 0 else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.net.parameters(), max_norm))
            progress.meta_step += 1
            if not math.isfinite(grad_norm):
                self.skip(grad_norm)
                return  # the optimizees of this episode are beyond use
            self.meta_opt.step()
            progress.consecutive_skips = 0
            self.run.log_scalars(
                "meta",
                {
                    "loss": sum(meta_losses) / len(meta_losses),
                    "final_loss": sum(final_losses) / len(final_losses),
                    "grad_norm": grad_norm,
                    "skipped_steps": progress.skipped,
                },
                progress.meta_step,
            )
        updates = trajectory.iterates[1:] - trajectory.iterates[:-1]
        self.run.writer.add_histogram("meta/updates", updates.detach().cpu().float(), progress.meta_step)

    def window_inners(self) -> list[InnerState]:
        """The optimizees of a window episode: ``meta_batch`` windows drawn for this episode (seeded by its number)."""
        cfg, progress, dataset = self.cfg, self.progress, self.dataset
        assert dataset is not None
        g = generator(cfg.seed, "windows", progress.episode)
        picks = torch.randint(len(dataset), (cfg.meta_batch,), generator=g).tolist()
        if cfg.on_policy_every and (progress.episode + 1) % cfg.on_policy_every == 0:
            self.refresh_on_policy(sorted(set(picks)))
        inners = []
        for index in picks:
            window = dataset[index]
            if index in progress.on_policy:
                window = dataclasses.replace(window, targets=progress.on_policy[index])
            task = self._window_task(window)
            iterates = dataset.iterates_of(window) if cfg.warm_start else None
            inners.append(start_window(task, window, self.net, iterates, warm=cfg.warm_start))
        return inners

    def _window_task(self, window: TargetWindow) -> Task:
        key = repr(window.task)
        if key not in self._window_tasks:
            self._window_tasks[key] = task_from_spec(window.task, device=self.device, dtype=self.dtype)
        return self._window_tasks[key]

    def refresh_on_policy(self, indices: list[int]) -> None:
        """Replace the targets of windows by a geodesic to where the learned optimizer itself gets in T steps.

        The new end must lie in the window's level set; otherwise the window keeps its targets (and it is counted).
        """
        assert self.dataset is not None
        refreshed = kept = 0
        for index in indices:
            window = self.dataset[index]
            task = self._window_task(window)
            inner = start_window(task, window, self.net, self.dataset.iterates_of(window), warm=self.cfg.warm_start)
            with torch.no_grad():
                for _ in range(window.window):
                    with torch.enable_grad():
                        loss = inner.task.loss(inner.model, inner.take_batch())
                        grads = torch.autograd.grad(loss, list(inner.model.parameters()))
                    for p, g in zip(inner.model.parameters(), grads):
                        p.grad = g
                    inner.optimizer.step()
            space = ParamSpace.from_task(inner.task)
            end = space.flatten(inner.model)
            if space.eval_loss(end) > window.level:
                kept += 1
                continue
            string = connect(space, window.start.to(end), end, window.level, self.dataset.dss_config())
            if string.connected:
                self.progress.on_policy[index] = string.resample(window.window + 1).cpu()
                refreshed += 1
            else:
                kept += 1
        self.run.log_scalars(
            "meta", {"on_policy_refreshed": refreshed, "on_policy_kept": kept}, self.progress.meta_step
        )

    def skip(self, grad_norm: float) -> None:
        cfg, progress = self.cfg, self.progress
        progress.skipped += 1
        progress.consecutive_skips += 1
        self.meta_opt.zero_grad(set_to_none=True)
        self.run.log_scalars("meta", {"skipped_steps": progress.skipped}, progress.meta_step)
        self.run.append_record({"kind": "skip", "meta_step": progress.meta_step, "grad_norm": grad_norm})
        if progress.consecutive_skips >= cfg.max_skips:
            raise MetaTrainingError(
                f"{progress.consecutive_skips} meta-steps in a row had a NaN or infinite meta-gradient (last at "
                f"meta-step {progress.meta_step}); lower meta_lr (now {cfg.meta_lr:g}), lower net.output_scale (now "
                f"{cfg.net.output_scale:g}) or set clip_grad_norm (now {cfg.clip_grad_norm:g}), then start a new run. "
                f"The last good state is {self.checkpoints / 'last.pt'}"
            )

    # -- validation ---------------------------------------------------------------------------------------------------

    def validate(self) -> dict[str, float]:
        """Final training and evaluation losses of the learned optimizer and of tuned Adam on the validation seeds.

        Means over seeds, then over the tasks of the family; checkpoints are selected by the training loss.
        """
        cfg, progress = self.cfg, self.progress
        val_seeds = [VAL_SEED_BASE + k for k in range(cfg.val_seeds)]
        totals = dict.fromkeys(("learned_final_loss", "learned_eval_loss", "adam_final_loss", "adam_eval_loss"), 0.0)
        for key, task in self._keyed_tasks():
            if key not in progress.baseline:
                progress.baseline[key] = self.tune_baseline(task, val_seeds)
            runs = evaluate_runs(task, "learned", val_seeds, cfg.steps, None, {"net": self.net})
            totals["learned_final_loss"] += sum(run_final_loss(r, cfg.final_window) for r in runs) / len(runs)
            totals["learned_eval_loss"] += sum(r.eval_loss for r in runs) / len(runs)
            totals["adam_final_loss"] += progress.baseline[key]["val"]
            totals["adam_eval_loss"] += progress.baseline[key]["val_eval"]
        metrics = {key: value / len(self.tasks) for key, value in totals.items()}
        metrics["learned_over_adam"] = metrics["learned_final_loss"] / metrics["adam_final_loss"]
        return metrics

    def tune_baseline(self, task: Task, val_seeds: list[int]) -> dict[str, float]:
        """Adam tuned by the harness's rules on the tuning seeds, and its mean losses on the validation seeds."""
        cfg = self.cfg
        tune_seeds = [TUNE_SEED_BASE + k for k in range(cfg.tune_seeds)]
        adam = tuned_baseline(task, "adam", tune_seeds, val_seeds, cfg.steps, cfg.lr_grid, cfg.final_window)
        return {"lr": adam.lr or math.nan, "val": adam.mean_final_loss, "val_eval": adam.mean_eval_loss}

    def _keyed_tasks(self) -> list[tuple[str, Task]]:
        keys = [f"{t.name}({', '.join(f'{k}={v}' for k, v in sorted(t.options.items()))})" for t in self.cfg.tasks]
        return list(zip(keys, self.tasks))

    def after_episode(self) -> None:
        cfg, progress = self.cfg, self.progress
        progress.episode += 1
        record: dict[str, Any] = {"kind": "episode", "episode": progress.episode, "meta_step": progress.meta_step}
        if progress.episode % cfg.val_every == 0 or progress.episode == cfg.episodes:
            metrics = self.validate()
            progress.last_val = metrics["learned_final_loss"]
            self.run.log_scalars("val", metrics, progress.meta_step)
            record.update(metrics)
            if progress.last_val < progress.best_val:
                progress.best_val, progress.best_episode = progress.last_val, progress.episode
                save_checkpoint(self.checkpoints / "best.pt", self.net, self.info())
        self.save_last()
        self.run.append_record(record)
        if self.callback is not None:
            self.callback(progress.episode)

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.perf_counter()
        done = self.progress.episode
        with tqdm(total=cfg.episodes, initial=done, desc="meta-train", unit="episode", leave=False) as bar:
            while self.progress.episode < cfg.episodes:
                self.episode()
                self.after_episode()
                bar.update(1)
                bar.set_postfix(val=f"{self.progress.last_val:.4g}", skipped=self.progress.skipped)
        progress = self.progress
        adam = sum(b["val"] for b in progress.baseline.values()) / max(len(progress.baseline), 1)
        return {
            "episodes": progress.episode,
            "meta_steps": progress.meta_step,
            "skipped_steps": progress.skipped,
            "best_val_loss": progress.best_val,
            "best_episode": progress.best_episode,
            "last_val_loss": progress.last_val,
            "adam_val_loss": adam,
            "adam_lr": {key: b["lr"] for key, b in progress.baseline.items()},
            "seconds_this_session": time.perf_counter() - started,
            "run_dir": str(self.run.path),
        }


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
        trainer = _MetaTrainer(cfg, run, callback)
        if trainer.restore():
            print(f"continuing from episode {trainer.progress.episode} of {cfg.episodes}")
        metrics = trainer.fit()
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
