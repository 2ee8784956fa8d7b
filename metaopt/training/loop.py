"""The meta-training loop (Andrychowicz et al. 2016, section 3): estimate, apply, validate, checkpoint, resume.

Each episode takes its optimizees from the schedule (:mod:`metaopt.training.schedule`: fresh ones unrolled K =
``steps`` steps in truncations of T = ``truncation``, or dataset windows of T steps). For every truncation the
estimator (:mod:`metaopt.outer`) advances them and returns a meta-gradient and its metrics; the loop alone applies
it: clipping to ``clip_grad_norm``, one meta-optimizer (Adam) step, the metrics written under ``meta/``. A
meta-gradient with NaN or infinite entries is skipped and counted (and the episode's optimizees are dropped); after
``max_skips`` skips in a row training stops with a message saying what to change. Every ``val_every`` episodes the
rule is validated against tuned Adam (:mod:`metaopt.training.validation`) and the best one is kept in
``checkpoints/best.pt`` (there is always one after the first validation, even a diverged one: the final metrics say
with ``far_worse_than_adam`` whether it is worth using).

The run directory's ``checkpoints/last.pt`` is written after every episode with everything needed to continue (rule,
meta-optimizer, counters, best score, baseline, on-policy targets, RNG state); a run continued from it ends with
the same weights, bit for bit on CPU, as one that was never interrupted.

Data parallel under ``torchrun``: rank r takes a contiguous share of each meta-batch
(:func:`envs.tooling.distributed.block`), its estimate is summed over the ranks weighted by the share's size
(:func:`average_over_ranks`), and every rank applies the same mean meta-gradient, so the rule stays the same on all of
them and equals, to float rounding, the rule of one process with the whole meta-batch. Rank 0 alone validates,
writes checkpoints, records and TensorBoard.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from envs.devices import resolve_device, resolve_dtype
from envs.seeding import seeded
from envs.task.registry import make_task
from envs.tooling import distributed
from envs.tooling.runs import Run
from metaopt.checkpoint import load_checkpoint, load_weights, save_checkpoint
from metaopt.objectives import make_objective
from metaopt.outer import EstimatorSetup, MetaGradient, make_estimator
from metaopt.rules import make_rule
from metaopt.training.config import TrainConfig, output_scale_hint
from metaopt.training.schedule import DatasetWindows, FreshEpisodes
from metaopt.training.validation import far_worse_than_adam, validate

__all__ = ["MetaTrainer", "MetaTrainingError", "average_over_ranks"]


class MetaTrainingError(ValueError):
    """Meta-training cannot go on (repeated non-finite meta-gradients); the message says what to change."""


@dataclass
class _Progress:
    """Everything besides the rule and the meta-optimizer that a resumed run needs (saved in last.pt)."""

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


class MetaTrainer:
    """The stateful shell: owns the rule, the estimator, the meta-optimizer and the run directory's files.

    Args:
        cfg: the configuration.
        run: the open run directory (TensorBoard, records, checkpoints).
        callback: called with the episode count after each episode's checkpoint is written.
    """

    def __init__(self, cfg: TrainConfig, run: Run, callback: Callable[[int], None] | None = None):
        self.cfg, self.run, self.callback = cfg, run, callback
        self.device, self.dtype = resolve_device(cfg.device), resolve_dtype(cfg.dtype)
        self.tasks = [make_task(t.name, device=self.device, dtype=self.dtype, **t.options) for t in cfg.tasks]
        with seeded(cfg.seed, "net"):
            self.rule = make_rule(cfg.rule.name, cfg.rule_config())
        self.rule.to(device=self.device, dtype=self.dtype)
        self.meta_opt = torch.optim.Adam(self.rule.parameters(), lr=cfg.meta_lr)
        self.average: list[torch.Tensor] | None = None
        """The rule's weights averaged over meta-steps (``meta_average`` > 0), else None."""
        if cfg.meta_average > 0:
            self.average = [w.detach().clone() for w in self.rule.parameters()]
        setup = EstimatorSetup(cfg.truncation, make_objective(cfg.objective), cfg.second_order, cfg.seed)
        self.estimator = make_estimator(cfg.estimator.name, cfg.estimator_config(), setup)
        self.share = distributed.block(cfg.meta_batch)
        """The meta-batch slots this rank unrolls (all of them alone)."""
        self.estimator.slot_offset = self.share.start
        self.main = distributed.is_main()
        self.progress = _Progress()
        self.checkpoints = run.subdir("checkpoints")
        self.windows = DatasetWindows(cfg, self.device, self.dtype) if cfg.targets else None
        self.fresh = FreshEpisodes(cfg, self.tasks)

    # -- state --------------------------------------------------------------------------------------------------------

    def restore(self) -> bool:
        """Continue from ``checkpoints/last.pt`` if the run has one; returns whether it did."""
        path = self.checkpoints / "last.pt"
        if not path.is_file():
            return False
        payload = load_checkpoint(path)
        trainer = payload["trainer"]
        load_weights(self.rule, payload["state_dict"], path)
        self.meta_opt.load_state_dict(trainer["meta_optimizer"])
        self.progress = _Progress(**trainer["progress"])
        torch.set_rng_state(trainer["rng"])
        if self.average is not None:
            for kept, saved in zip(self.average, trainer["average"], strict=True):
                kept.copy_(saved)
        return True

    def save_last(self) -> None:
        """Write ``checkpoints/last.pt``: the rule and everything the loop needs to continue."""
        trainer = {
            "meta_optimizer": self.meta_opt.state_dict(),
            "progress": dataclasses.asdict(self.progress),
            "rng": torch.get_rng_state(),
        }
        if self.average is not None:
            trainer["average"] = [a.clone() for a in self.average]
        save_checkpoint(self.checkpoints / "last.pt", self.rule, self.info(), trainer=trainer)

    def info(self) -> dict[str, Any]:
        """Provenance stored in the checkpoints."""
        return {
            "tasks": [dataclasses.asdict(t) for t in self.cfg.tasks],
            "steps": self.cfg.steps,
            "episode": self.progress.episode,
            "meta_step": self.progress.meta_step,
            "val_loss": self.progress.last_val,
        }

    # -- training -----------------------------------------------------------------------------------------------------

    def episode(self) -> None:
        """One episode: the schedule's optimizees, one meta-step per truncation."""
        progress = self.progress
        if self.windows is not None:
            picks = self.windows.picks(progress.episode)
            if self.windows.refresh_due(progress.episode):
                refreshed, kept = self.windows.refresh(sorted(set(picks)), self.rule)
                progress.on_policy.update(refreshed)
                self.run.log_scalars(
                    "meta", {"on_policy_refreshed": len(refreshed), "on_policy_kept": kept}, progress.meta_step
                )
            inners = self.windows.inners([picks[i] for i in self.share], self.rule, progress.on_policy)
            truncations = self.windows.truncations
        else:
            inners = self.fresh.inners(progress.episode, self.rule, self.share, self.estimator.advance)
            truncations = self.fresh.truncations
        for _ in range(truncations):
            self.meta_opt.zero_grad(set_to_none=True)
            estimate = self.estimate(inners)
            if not self.apply(estimate):
                return  # the optimizees of this episode are beyond use
        for name, values in estimate.histograms.items():
            self.run.writer.add_histogram(f"meta/{name}", values.cpu().float(), progress.meta_step)

    def estimate(self, inners: list[Any]) -> MetaGradient:
        """The estimator's meta-gradient over ``inners`` (this rank's share), averaged over the ranks."""
        meta_step = self.progress.meta_step
        local = self.estimator.estimate(self.rule, inners, meta_step=meta_step) if inners else None
        if distributed.world_size() == 1:
            assert local is not None
            return local
        return average_over_ranks(list(self.rule.parameters()), local, len(inners), self.cfg.meta_batch)

    def apply(self, estimate: MetaGradient) -> bool:
        """Clip and apply a meta-gradient, or skip it if it is not finite; log the step. Returns whether applied."""
        cfg, progress = self.cfg, self.progress
        weights = list(self.rule.parameters())
        for weight, grad in zip(weights, estimate.grads, strict=True):
            weight.grad = grad
        max_norm = cfg.clip_grad_norm if cfg.clip_grad_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(weights, max_norm))
        progress.meta_step += 1
        if not math.isfinite(grad_norm):
            self.skip(grad_norm)
            return False
        self.meta_opt.step()
        self.update_average()
        progress.consecutive_skips = 0
        metrics = {**estimate.metrics, "grad_norm": grad_norm, "skipped_steps": progress.skipped}
        self.run.log_scalars("meta", metrics, progress.meta_step)
        return True

    def update_average(self) -> None:
        """Move the weights' average towards the rule after an applied meta-step (``meta_average``)."""
        if self.average is None:
            return
        step = self.progress.meta_step - self.progress.skipped  # applied meta-steps, this one included
        decay = min(self.cfg.meta_average, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(self.average, [w.detach() for w in self.rule.parameters()], 1 - decay)

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """The rule holds the averaged weights inside the block (unchanged without ``meta_average``)."""
        if self.average is None:
            yield
            return
        weights: list[torch.Tensor] = list(self.rule.parameters())
        raw = [w.detach().clone() for w in weights]
        with torch.no_grad():
            torch._foreach_copy_(weights, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(weights, raw)

    def skip(self, grad_norm: float) -> None:
        """Count a non-finite meta-gradient; stop training after ``max_skips`` in a row."""
        cfg, progress = self.cfg, self.progress
        progress.skipped += 1
        progress.consecutive_skips += 1
        self.meta_opt.zero_grad(set_to_none=True)
        self.run.log_scalars("meta", {"skipped_steps": progress.skipped}, progress.meta_step)
        if self.main:
            self.run.append_record({"kind": "skip", "meta_step": progress.meta_step, "grad_norm": grad_norm})
        if progress.consecutive_skips >= cfg.max_skips:
            scale = output_scale_hint(cfg)
            raise MetaTrainingError(
                f"{progress.consecutive_skips} meta-steps in a row had a NaN or infinite meta-gradient (last at "
                f"meta-step {progress.meta_step}); lower meta_lr (now {cfg.meta_lr:g}), lower {scale} or set "
                f"clip_grad_norm (now {cfg.clip_grad_norm:g}), then start a new run. "
                f"The last good state is {self.checkpoints / 'last.pt'}"
            )

    def after_episode(self) -> None:
        """Count the episode, validate when due (keeping the best rule), write ``last.pt`` and the episode's record."""
        cfg, progress = self.cfg, self.progress
        progress.episode += 1
        record: dict[str, Any] = {"kind": "episode", "episode": progress.episode, "meta_step": progress.meta_step}
        due = progress.episode % cfg.val_every == 0 or progress.episode == cfg.episodes
        if due and self.main:
            with self.averaged():  # the averaged weights are what is validated and kept (with meta_average)
                metrics = validate(cfg, self.tasks, self.rule, progress.baseline)
                progress.last_val = metrics["learned_final_loss"]
                self.run.log_scalars("val", metrics, progress.meta_step)
                record.update(metrics)
                score = progress.last_val if not math.isnan(progress.last_val) else math.inf
                if score < progress.best_val or progress.best_episode < 0:  # the first validation is kept anyway
                    progress.best_val, progress.best_episode = score, progress.episode
                    save_checkpoint(self.checkpoints / "best.pt", self.rule, self.info())
        if due and distributed.world_size() > 1:
            shared = (progress.last_val, progress.best_val, progress.best_episode, progress.baseline)
            progress.last_val, progress.best_val, progress.best_episode, progress.baseline = (
                distributed.broadcast_object(shared)  # rank 0 validated: every rank reports the same metrics
            )
        if self.main:
            self.run.flush()  # every event before the resume point on disk: a resumed run does not log it again
            self.save_last()
            self.run.append_record(record)
        if self.callback is not None:
            self.callback(progress.episode)

    def train(self) -> dict[str, Any]:
        """Run the remaining episodes; return the run's metrics."""
        cfg = self.cfg
        started = time.perf_counter()
        done = self.progress.episode
        with tqdm(total=cfg.episodes, initial=done, desc="meta-train", unit="episode", leave=False) as bar:
            while self.progress.episode < cfg.episodes:
                self.episode()
                self.after_episode()
                bar.update(1)
                bar.set_postfix(val=f"{self.progress.last_val:.4g}", skipped=self.progress.skipped)
                if self.main and self.progress.episode - done == ESTIMATE_AFTER < cfg.episodes - done:
                    bar.write(remaining_time_line(time.perf_counter() - started, ESTIMATE_AFTER,
                                                  cfg.episodes - self.progress.episode))  # fmt: skip
        progress = self.progress
        baseline = [b["val"] for b in progress.baseline.values()]
        adam = sum(baseline) / len(baseline) if baseline else math.nan
        return {
            "episodes": progress.episode,
            "meta_steps": progress.meta_step,
            "skipped_steps": progress.skipped,
            "best_val_loss": progress.best_val,
            "best_episode": progress.best_episode,
            "last_val_loss": progress.last_val,
            "adam_val_loss": adam,
            "best_over_adam": progress.best_val / adam if adam else math.nan,
            "far_worse_than_adam": far_worse_than_adam(progress.best_val, adam),
            "adam_lr": {key: b["lr"] for key, b in progress.baseline.items()},
            "seconds_this_session": time.perf_counter() - started,
            "run_dir": str(self.run.path),
        }


ESTIMATE_AFTER = 5
"""Episodes of a session after which ``metaopt train`` prints how long the rest should take."""


def remaining_time_line(seconds: float, episodes_done: int, episodes_left: int) -> str:
    """The one-line estimate printed after the first episodes: the rest at the rate so far."""
    per_episode = seconds / episodes_done
    left = per_episode * episodes_left
    when = f"{left / 60:.1f} min" if left >= 60 else f"{left:.0f} s"
    return (
        f"estimate: about {when} for the remaining {episodes_left} episodes ({per_episode:.2g} s per episode so far, "
        "validation included; on this machine at its present load)"
    )


def average_over_ranks(weights: list[torch.Tensor], local: MetaGradient | None, count: int, total: int) -> MetaGradient:
    """The meta-batch mean of the ranks' estimates: each weighted by ``count``, its share of the ``total`` slots.

    Args:
        weights: the rule's parameters (shapes, dtype and device of the gradients).
        local: this rank's estimate over its ``count`` optimizees (a mean over them); None when it holds none.
        count: this rank's share of the meta-batch.
        total: the whole meta-batch (the sum of every rank's ``count``).

    Returns:
        The same on every rank: gradients summed in float64 and divided by ``total`` (None where no rank had one),
        metrics weighted the same way, and the histograms of the last rank holding optimizees (the last slot's, as
        one process shows them).
    """
    device = weights[0].device
    parts, present = [], torch.zeros(len(weights), dtype=torch.float64, device=device)
    for i, weight in enumerate(weights):
        grad = local.grads[i] if local is not None else None
        if grad is None:
            parts.append(torch.zeros(weight.numel(), dtype=torch.float64, device=device))
        else:
            parts.append(grad.detach().to(torch.float64).reshape(-1) * count)
            present[i] = 1.0
    flat = distributed.all_reduce_sum(torch.cat([*parts, present]))
    grads: list[torch.Tensor | None] = []
    offset = 0
    for i, weight in enumerate(weights):
        piece = flat[offset : offset + weight.numel()]
        offset += weight.numel()
        grads.append(None if flat[-len(weights) + i] == 0 else (piece / total).view_as(weight).to(weight.dtype))
    mine = (count, local.metrics, {k: v.detach().cpu() for k, v in local.histograms.items()}) if local else (0, {}, {})
    shares = [share for share in distributed.all_gather_objects(mine) if share[0]]
    keys = dict.fromkeys(key for _, metrics, _ in shares for key in metrics)
    metrics = {
        key: sum(n * m[key] for n, m, _ in shares if key in m) / sum(n for n, m, _ in shares if key in m)
        for key in keys
    }
    return MetaGradient(tuple(grads), metrics, shares[-1][2] if shares else {})
