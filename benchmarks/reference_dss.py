"""A sequential, reference-style Dynamic String Sampling, for benchmarks only (the library never imports it).

It does the engine's work the way the public reference code does it: depth-first recursion (Algorithm 1 as printed),
one bead trained at a time with its own ``torch.optim`` optimizer on a model, and every point of every interpolation
curve evaluated one by one. With ``fresh_models=True`` (the reference style: the public code builds a new graph for
every interpolation point) each point gets a newly built model; with ``False`` (an optimized sequential loop) the vector
is copied into one reused model. The decisions are the
engine's (same grid, same refinement, same alpha, same stopping checks, same batch streams), so both reach the same
outcome on the same endpoints; only the execution differs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import envs
from envs.seeding import derive_seed
from geodesics.curve import CurveConfig


class SequentialDSS:
    """Algorithm 1, depth-first and one model at a time; ``failed`` is set when a bead or the depth gives out."""

    def __init__(
        self, task: envs.Task, threshold: float, alpha: float = 0.95, max_steps: int = 2000, check_every: int = 10,
        max_depth: int = 10, seed: int = 0, curve: CurveConfig | None = None, fresh_models: bool = True,
    ):  # fmt: skip
        self.task, self.threshold, self.alpha = task, threshold, alpha
        self.max_steps, self.check_every, self.max_depth, self.seed = max_steps, check_every, max_depth, seed
        self.curve = curve or CurveConfig()
        self.model = task.init_model(0)
        self.inputs, self.targets = task.eval_data()
        self.failed = False
        self.fresh_models = fresh_models

    def loss_at(self, theta: Tensor) -> float:
        """Evaluation loss of one vector, in a newly built model (reference style) or copied into the reused one."""
        model = self.task.init_model(0) if self.fresh_models else self.model
        with torch.no_grad():
            vector_to_parameters(theta, model.parameters())
            return float(self.task.criterion(model(self.inputs), self.targets))

    def segment_max(self, a: Tensor, b: Tensor) -> tuple[float, float]:
        """(t*, certified upper bound), point by point, with the engine's grid-and-zoom refinement."""
        c = self.curve
        grid = [i / (c.num_points - 1) for i in range(c.num_points)]
        values = [self.loss_at(torch.lerp(a, b, t)) for t in grid]
        peaks = [i for i in range(len(values)) if (i == 0 or values[i] >= values[i - 1])
                 and (i == len(values) - 1 or values[i] >= values[i + 1])]  # fmt: skip
        peaks = sorted(peaks, key=lambda i: -values[i])[: c.refine_peaks]
        best_t, best_upper, best_value = 0.0, -math.inf, -math.inf
        for i in peaks:
            centre, best = grid[i], values[i]
            left = values[i - 1] if i > 0 else math.nan
            right = values[i + 1] if i < len(values) - 1 else math.nan
            half = 1.0 / (c.num_points - 1)
            for _ in range(c.refine_rounds):
                lo, hi = max(centre - half, 0.0), min(centre + half, 1.0)
                ts = [lo + (hi - lo) * j / (c.refine_points - 1) for j in range(c.refine_points)]
                vals = [self.loss_at(torch.lerp(a, b, t)) for t in ts]
                j = max(range(len(vals)), key=lambda k: vals[k])
                if vals[j] >= best:
                    centre, best = ts[j], vals[j]
                    left = vals[j - 1] if j > 0 else math.nan
                    right = vals[j + 1] if j < len(vals) - 1 else math.nan
                half = (hi - lo) / (c.refine_points - 1)
            slack = max([best - v for v in (left, right) if not math.isnan(v)] or [0.0], default=0.0)
            if best > best_value:
                best_t, best_value, best_upper = centre, best, best + max(slack, 0.0)
        return best_t, best_upper

    def train_bead(self, init: Tensor, depth: int) -> Tensor:
        """Train one bead alone with torch.optim.Adam until its evaluation loss is at most alpha * L0."""
        model = self.task.init_model(0)
        vector_to_parameters(init.clone(), model.parameters())
        opt = torch.optim.Adam(model.parameters(), lr=self.task.recipe.lr)
        batches = self.task.batches(derive_seed(self.seed * 1000 + depth, "beads"))
        target = self.alpha * self.threshold
        if self.task.eval_loss(model) <= target:
            return parameters_to_vector(model.parameters()).detach()
        for step in range(1, self.max_steps + 1):
            loss = self.task.loss(model, next(batches))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (step % self.check_every == 0 or step == self.max_steps) and self.task.eval_loss(model) <= target:
                return parameters_to_vector(model.parameters()).detach()
        self.failed = True
        return parameters_to_vector(model.parameters()).detach()

    def connect(self, a: Tensor, b: Tensor, depth: int = 1) -> list[Tensor]:
        """Beads from a to b (both included), recursing depth-first into failing halves."""
        t, upper = self.segment_max(a, b)
        if upper <= self.threshold or self.failed:
            return [a, b]
        if depth > self.max_depth:
            self.failed = True
            return [a, b]
        bead = self.train_bead(torch.lerp(a, b, min(max(t, 0.01), 0.99)), depth)
        return self.connect(a, bead, depth + 1)[:-1] + self.connect(bead, b, depth + 1)
