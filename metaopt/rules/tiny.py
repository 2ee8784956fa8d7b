"""A tiny per-parameter MLP with per-tensor normalized, muP-scaled updates and a hybrid AdamW option: ``tiny``.

What each part follows, and what this project changed:

* **Per-tensor normalized output** (Celo2, Moudgil, Knyazev & Belilovsky 2026): a small MLP (2 x 8 ReLU units by
  default) shared by every coordinate outputs a direction ``d``; each tensor's update is ``d`` divided by its root
  mean square over the tensor, times a per-tensor step size, so the size of a step is set by the step size alone.
  Here the MLP's output also has a learned linear skip from its inputs, initialised to minus the Adam-like feature
  ``m_0 / sqrt(v)``: before meta-training the rule is a per-tensor normalised Adam, and meta-training learns the
  correction (a small budget starts from something that works).
* **Scale-free inputs**: every input is a ratio that a loss multiplied by c > 0 leaves unchanged: the gradient and the
  bias-corrected momenta over ``sqrt(v_hat + eps mean(v_hat))`` (Adam's direction, with an epsilon relative to the
  tensor's mean second moment instead of an absolute one, so the invariance is exact to rounding), the parameter
  over its tensor's root mean square, and progress ``tanh(t / s)`` (a per-tensor bias of the first layer). Together
  with the normalised output, the sequence of updates does not depend on the loss's scale.
* **muP scaling** (muLO, Thérien et al. 2024): the inputs are O(1) whatever the width (they are normalised per
  tensor), and the step of a tensor with two or more dimensions is multiplied by ``base_fan_in / fan_in`` (fan-in:
  the product of all dimensions but the first), muP's Adam rule for hidden and output matrices; vectors keep the
  plain step. The first matrix's fan-in is the input size, which does not grow with width; a small one (a table of
  4 columns) would get a step 16x the base, which ``mup_cap`` caps at 1x.
* **Relative to the parameter** (VeLO, Metz et al. 2022), optional: ``param_scale`` multiplies each tensor's step
  by ``max(rms(p), param_floor)``, so the step is a fraction of the weights' size.
* **Hybrid** (Celo2's harness), optional: with ``learned_tensors: hidden`` the rule drives only hidden weight
  matrices, every tensor of two or more dimensions but the first and the last of them in the step's order (an
  embedding table comes first in most models); AdamW, with its own ``adamw_lr``, betas, epsilon and decoupled weight
  decay, drives the rest (biases, norms, embeddings, the first and last layer). ``learned_tensors: none`` is AdamW
  on every tensor (exactly ``torch.optim.AdamW``), ``all`` the learned rule on every tensor. The hybrid lives in the
  rule, so both optimizer shells serve it unchanged. A learned scalar ``adamw_log_scale`` (0 at the start)
  multiplies AdamW's rate by ``exp``; it is a meta-parameter like the MLP's weights.
* **Orthogonalized matrices** (Celo2's harness, after Muon, Jordan et al. 2024), optional: with ``orthogonalize``
  the MLP's direction over each learned tensor of two or more dimensions, seen as ``rows x the rest``, goes through
  ``ns_steps`` Newton-Schulz iterations (:func:`envs.training.muon.orthogonalize`, in the rule's dtype) before the
  per-tensor normalisation, so the learned rule picks the direction and the iteration spreads it over every singular
  direction of the matrix; vectors keep the plain direction. Celo2 orthogonalizes only with AdamW on the vectors; here
  the two options are independent. It costs a few matrix products per matrix and step, about ``10 m`` multiply-adds
  per coordinate of an ``m x n`` matrix (``m <= n``): the cost per coordinate grows with the width, and at a width
  of a few hundred it is most of the step. ``ns_block`` caps it: groups of at most ``ns_block`` rows of the shorter
  side are orthogonalized each on its own (block-wise orthogonalization, as MuonBP's local steps, Khaled et al. 2025),
  about ``10 ns_block`` multiply-adds per coordinate whatever the width; matrices with a side of at most
  ``ns_block`` are orthogonalized whole, exactly as without it. A matrix or group of at least 128 rows whose other
  side is at least twice as long is iterated on its Gram matrix (:func:`envs.training.muon.gram_newton_schulz`,
  about ``2 m + 17 m^2 / n`` multiply-adds per coordinate; the same iterations, float32 rounding apart).
  ``ns_dtype: bfloat16`` runs the iterations in bfloat16, as Muon's (faster on wide matrices where the processor has
  bfloat16 arithmetic). ``ns_matrices: hidden`` orthogonalizes only the hidden matrices, as Muon does (the first and
  the last matrix keep the MLP's direction).
* **Online step-size adaptation** (hypergradient descent, Baydin et al. 2018), optional: with ``adapt_rate`` > 0
  each learned tensor keeps a log factor on its step, moved every step by ``-adapt_rate`` times the cosine between
  the tensor's gradient and its previous update, within ``[-log adapt_limit, log adapt_limit]``. A gradient that
  still points against the last update (the step fell short) lengthens the next step; one that has turned (it
  overshot) shortens it. Baydin et al. adapt one global rate by the dot product; here each tensor has its own factor,
  and the cosine keeps the updates independent of the loss's scale. It costs one more number per coordinate of state
  (the last update) and three reductions per step; the in-place drop-in step has it (compiled or not).
* **Decoupled weight decay** (AdamW's, Loshchilov and Hutter 2019), optional: ``weight_decay`` subtracts that
  rate times each learned tensor's step size times its weights, so the weights' root mean square settles near
  ``1 / weight_decay`` under a steady push, whatever the step size. The step size includes the muP factor, so the
  decay per step weakens as ``1 / fan-in`` past ``base_fan_in``; ``weight_decay_mup: false`` leaves the factor out
  of the decay (the same decay per step at every width, the width-independent decay Wortsman et al. 2023 advise
  for muP-scaled AdamW).
* **Learned global scheduler** (Celo), optional: :mod:`metaopt.rules.scheduler` multiplies every tensor's step by
  one learned factor per step. ``train: scheduler`` with ``init_from`` trains it in a second stage: the other
  weights are loaded from a checkpoint and kept as buffers (not meta-parameters) under the same names.

A tensor whose gradients have all been zero since its first step does not move (the learned step is gated by its
second moment being non-zero; AdamW's update is then zero too, as ``torch.optim.AdamW``'s, apart from weight decay).

Cost per coordinate and step, 2 x 8 units and two momenta: about 280 flops (the moments' updates, four inputs, two
layers, the readout and the normalisation), a fixed number of tensor operations whatever the number of tensors: the
state stays joined (feature-major ``(K, N)`` moments), per-tensor quantities are reduced and spread by index.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from typing_extensions import override

from envs.errors import InvalidValue
from envs.tooling.config import check_range
from envs.training.muon import NS_METHODS, matrix_mask, orthogonalize
from metaopt.rules.base import MAX_LAYOUTS, LearnedRule, ParamState, plain_tensors
from metaopt.rules.scheduler import GlobalScheduler, scheduler_features, scheduler_features_by_model
from metaopt.rules.tiny_inplace import NS_DTYPES, in_place_step, mup_factor, ns_dtype

__all__ = ["LEARNED_TENSORS", "TRAIN_PARTS", "TinyConfig", "TinyRule", "learned_tensor_mask"]

LEARNED_TENSORS = ("all", "hidden", "none")
"""Which tensors the learned rule drives (the rest get AdamW)."""
NS_MATRICES = ("all", "hidden")
"""Which learned matrices ``orthogonalize`` orthogonalizes (:func:`envs.training.muon.matrix_mask`'s choices)."""
TRAIN_PARTS = ("all", "scheduler")
"""Which weights are meta-parameters: all of them, or only the scheduler's (second stage)."""

_TINY = 1e-30
"""Floor of the divisions by a second moment or a root mean square: only an all-zero tensor reaches it."""


@dataclass
class TinyConfig:
    """Options of the ``tiny`` rule; recorded in every checkpoint."""

    hidden_size: int = 8
    """Units per hidden layer."""
    num_layers: int = 2
    """Hidden layers (ReLU)."""
    momentum_decays: list[float] = field(default_factory=lambda: [0.9, 0.99])
    """Decays of the momenta the MLP reads (the first one is the skip's Adam direction)."""
    second_moment_decay: float = 0.999
    """Decay of the second moment the MLP's inputs are divided by."""
    eps: float = 1e-8
    """Floor of the second moment, relative to its tensor's mean (keeps the inputs scale-free)."""
    time_scales: list[float] = field(default_factory=lambda: [10.0, 100.0, 1000.0])
    """Time scales s of the progress features tanh(t / s)."""
    param_feature: bool = True
    """Give the MLP the parameter over its tensor's root mean square."""
    step_size: float = 0.01
    """Root mean square of a tensor's learned update at fan-in base_fan_in (before the learned log_step)."""
    mup: bool = True
    """Multiply the step of tensors with two or more dimensions by base_fan_in / fan_in."""
    base_fan_in: int = 64
    """Fan-in at which the muP factor is 1."""
    mup_cap: bool = False
    """Cap the muP factor at 1: a tensor with a fan-in below base_fan_in (the input layer of a small table) keeps the
    base step instead of a larger one."""
    param_scale: bool = False
    """Multiply each tensor's step by max(rms(p), param_floor) (VeLO)."""
    param_floor: float = 0.001
    """Least parameter root mean square used by param_scale."""
    learned_tensors: str = "all"
    """all: the learned rule on every tensor; hidden: only on hidden weight matrices, AdamW on the rest; none: AdamW
    everywhere."""
    adamw_lr: float = 0.001
    """AdamW's learning rate (times exp(adamw_log_scale))."""
    adamw_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW's beta1 and beta2."""
    adamw_eps: float = 1e-8
    """AdamW's epsilon."""
    adamw_weight_decay: float = 0.0
    """AdamW's decoupled weight decay."""
    orthogonalize: bool = False
    """Orthogonalize each learned matrix's direction (Newton-Schulz, as Muon and Celo2) before the normalisation."""
    ns_steps: int = 5
    """Newton-Schulz iterations of orthogonalize."""
    ns_block: int = 0
    """0: orthogonalize each matrix whole; n > 0: where both sides are longer than n, in groups of n rows of the
    shorter side, each on its own (a cost per coordinate that no longer grows with the width)."""
    ns_matrices: str = "all"
    """Which learned matrices the ``orthogonalize`` option orthogonalizes: all, or hidden (not the first and the last
    matrix in the step's order, Muon's choice; those two keep the MLP's plain direction)."""
    ns_dtype: str = "rule"
    """rule: the Newton-Schulz iterations in the rule's dtype; bfloat16: in bfloat16, as Muon (about 2x faster
    products where the processor has bfloat16 arithmetic, the direction off by about 1% relative)."""
    ns_method: str = "auto"
    """How the Newton-Schulz iterations are computed (the same iterations in exact arithmetic): auto (on the Gram
    matrix where a matrix or group has at least 128 rows and twice as many columns, in float32 or float64), standard
    (always on the matrix), gram (always on its Gram matrix: with ``ns_block: 64`` 3-4x faster iterations on wide
    matrices, float32 rounding apart); see :func:`envs.training.muon.orthogonalize`."""
    adapt_rate: float = 0.0
    """Rate of each learned tensor's online step-size adaptation (0: off): its log step moves by minus this times the
    cosine between the tensor's gradient and its previous update."""
    adapt_limit: float = 10.0
    """Largest factor (and 1 / the smallest) the adaptation may multiply a tensor's step by."""
    weight_decay: float = 0.0
    """Decoupled weight decay of the learned tensors, times each tensor's step size (AdamW's, with the step size as
    the rate): the weights' root mean square cannot grow far past 1 / weight_decay."""
    weight_decay_mup: bool = True
    """True: the decay at each tensor's step size, muP factor included (it weakens as 1 / fan-in past base_fan_in);
    false: without the muP factor, the same decay per step at every width."""
    scheduler: bool = False
    """Multiply every step by a learned global scheduler's factor."""
    scheduler_hidden: int = 8
    """Units of the scheduler's hidden layer."""
    train: str = "all"
    """all: every weight is a meta-parameter; scheduler: only the scheduler's (the rest from init_from, fixed)."""
    init_from: str | None = None
    """Checkpoint (path or shipped name) of a tiny rule whose weights this one starts from (for train: scheduler)."""

    def __post_init__(self) -> None:
        check_range(self, "hidden_size", low=1, integer=True)
        check_range(self, "num_layers", low=1, integer=True)
        check_range(self, "momentum_decays", low=0, high=1, high_open=True)
        check_range(self, "second_moment_decay", low=0, high=1, high_open=True)
        check_range(self, "eps", low=0)
        check_range(self, "time_scales", low=0, low_open=True)
        check_range(self, "step_size", low=0, low_open=True)
        check_range(self, "base_fan_in", low=1, integer=True)
        check_range(self, "param_floor", low=0, low_open=True)
        check_range(self, "adamw_lr", low=0)
        check_range(self, "adamw_betas", low=0, high=1, high_open=True)
        check_range(self, "adamw_eps", low=0)
        check_range(self, "adamw_weight_decay", low=0)
        check_range(self, "scheduler_hidden", low=1, integer=True)
        check_range(self, "ns_steps", low=1, integer=True)
        check_range(self, "ns_block", low=0, integer=True)
        check_range(self, "adapt_rate", low=0)
        check_range(self, "adapt_limit", low=1)
        check_range(self, "weight_decay", low=0)
        if len(self.adamw_betas) != 2:
            raise InvalidValue(TinyConfig, "adamw_betas", self.adamw_betas, "must be two numbers [beta1, beta2]")
        for key, valid in (
            ("learned_tensors", LEARNED_TENSORS),
            ("train", TRAIN_PARTS),
            ("ns_dtype", NS_DTYPES),
            ("ns_method", NS_METHODS),
            ("ns_matrices", NS_MATRICES),
        ):
            if getattr(self, key) not in valid:
                raise InvalidValue(
                    TinyConfig,
                    key,
                    getattr(self, key),
                    f"must be one of {', '.join(valid)}, got {getattr(self, key)!r}",
                )
        if self.train == "scheduler" and not (self.scheduler and self.init_from):
            raise InvalidValue(
                TinyConfig, "train", self.train, "trains the scheduler alone: set scheduler: true and init_from"
            )

    @property
    def num_inputs(self) -> int:
        """Per-coordinate inputs of the MLP."""
        return 1 + len(self.momentum_decays) + int(self.param_feature)


def learned_tensor_mask(shapes: Sequence[tuple[int, ...]], learned_tensors: str) -> list[bool]:
    """Which tensors of a step the learned rule drives (the others get AdamW).

    ``hidden``: tensors of two or more dimensions except the first and the last of them (so a model with fewer than
    three weight matrices is all AdamW).
    """
    if learned_tensors == "all":
        return [True] * len(shapes)
    if learned_tensors == "none":
        return [False] * len(shapes)
    return matrix_mask(shapes, "hidden")  # Muon's choice of hidden matrices


class TinyRule(LearnedRule):
    """The tiny normalised per-parameter MLP (see the module docstring).

    Args:
        config: the options (default: 2 x 8 units, the learned rule on every tensor, muP on, no scheduler).
    """

    Config = TinyConfig
    config: TinyConfig
    w_in: Tensor
    b_in: Tensor
    w_time: Tensor
    w_out: Tensor
    w_skip: Tensor
    log_step: Tensor
    adamw_log_scale: Tensor

    def __init__(self, config: TinyConfig | None = None):
        super().__init__(dataclasses.replace(config) if config is not None else TinyConfig())
        cfg = self.config
        trainable = cfg.train == "all"
        h, f = cfg.hidden_size, cfg.num_inputs
        weights: dict[str, Tensor] = {
            "w_in": torch.randn(h, f) * math.sqrt(2.0 / f),
            "b_in": torch.zeros(h),
            "w_time": torch.randn(h, len(cfg.time_scales)) * math.sqrt(1.0 / len(cfg.time_scales)),
        }
        for layer in range(1, cfg.num_layers):
            weights[f"w_{layer}"] = torch.randn(h, h) * math.sqrt(2.0 / h)
            weights[f"b_{layer}"] = torch.zeros(h)
        weights["w_out"] = torch.randn(1, h) * (0.01 / math.sqrt(h))  # small: the skip dominates at the start
        skip = torch.zeros(1, f)
        skip[0, 1] = -1.0  # minus the first momentum's Adam direction: a normalised Adam before meta-training
        weights["w_skip"] = skip
        weights["log_step"] = torch.zeros(())
        weights["adamw_log_scale"] = torch.zeros(())
        for name, value in weights.items():
            if trainable:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.schedule = GlobalScheduler(len(cfg.time_scales) + 1, cfg.scheduler_hidden) if cfg.scheduler else None
        self._layouts: dict[tuple, _Layout] = {}
        if cfg.init_from:
            self._load_start(cfg.init_from)

    def _load_start(self, source: str) -> None:
        """Take the weights of the tiny rule in checkpoint ``source``; the scheduler's too where it has one."""
        from metaopt.checkpoint import CheckpointError, load_checkpoint  # a rule module must not import it at the top

        payload = load_checkpoint(source)
        if payload.get("rule") != "tiny":
            raise CheckpointError(f"init_from={source} holds a {payload.get('rule')!r} rule, not a tiny one")
        own = self.state_dict()
        found = {k: v for k, v in payload["state_dict"].items() if k in own}
        wrong = sorted(k for k, v in found.items() if v.shape != own[k].shape)
        missing = sorted(k for k in own if k not in found and not k.startswith("schedule."))
        if wrong or missing:
            raise CheckpointError(
                f"init_from={source} does not fit this rule's options (missing: {missing}, other shapes: {wrong}); "
                "use the options it was trained with"
            )
        self.load_state_dict({**own, **found})

    # -- state ----------------------------------------------------------------------------------------------------

    @property
    def _momentum_decays(self) -> list[float]:
        """Every momentum kept: the MLP's, then AdamW's beta1 when it is not one of them (and AdamW is used)."""
        cfg = self.config
        decays = list(cfg.momentum_decays)
        if cfg.learned_tensors != "all" and cfg.adamw_betas[0] not in decays:
            decays.append(cfg.adamw_betas[0])
        return decays

    @property
    def _second_decays(self) -> list[float]:
        """Every second moment kept: the MLP's, then AdamW's beta2 when it differs (and AdamW is used)."""
        cfg = self.config
        decays = [cfg.second_moment_decay]
        if cfg.learned_tensors != "all" and cfg.adamw_betas[1] != cfg.second_moment_decay:
            decays.append(cfg.adamw_betas[1])
        return decays

    @property
    @override
    def separable(self) -> bool:
        """True unless ``learned_tensors: hidden`` (first and last matrices by place) or the global scheduler."""
        return self.config.learned_tensors != "hidden" and self.schedule is None

    @property
    @override
    def separable_by_model(self) -> bool:
        """Also with the scheduler, when the learned rule drives every tensor: :meth:`step_models` gives each model
        its own scheduler factor, from its own tensors' statistics."""
        return self.separable or self.config.learned_tensors == "all"

    @override
    def step_models(self, grads: Tensor, state: dict, params: Sequence[Tensor], models: Tensor) -> tuple[Tensor, dict]:
        if not self.separable_by_model:
            raise ValueError("the tiny rule with learned_tensors: hidden places the first and last matrix by model")
        return self._step(grads, state, params, models)

    @override
    def init_state(self, param: Tensor) -> ParamState:
        dtype, device, n = self.dtype, param.device, param.numel()
        state = {
            "momenta": torch.zeros(len(self._momentum_decays), n, dtype=dtype, device=device),
            "second": torch.zeros(len(self._second_decays), n, dtype=dtype, device=device),
            "step": torch.zeros(1, dtype=dtype, device=device),
        }
        if self.config.scheduler:
            state["first_square"] = torch.zeros(1, dtype=dtype, device=device)
        if self.config.adapt_rate:
            state["last"] = torch.zeros(n, dtype=dtype, device=device)
            state["log_adapt"] = torch.zeros(1, dtype=dtype, device=device)
        return state

    @override
    def join(self, pieces: Sequence[ParamState]) -> dict[str, Tensor]:
        dtype = self.dtype
        joined = {
            "momenta": torch.cat([p["momenta"] for p in pieces], dim=1).to(dtype),
            "second": torch.cat([p["second"] for p in pieces], dim=1).to(dtype),
            "steps": torch.cat([p["step"] for p in pieces]).to(dtype),
        }
        for key in _TENSOR_STATE if self.config.adapt_rate else ():
            joined[key] = torch.cat([p[key] for p in pieces]).to(dtype)
        if self.config.scheduler:
            joined["first_square"] = torch.cat([p["first_square"] for p in pieces]).to(dtype)
        return joined

    @override
    def split(self, state: dict, params: Sequence[Tensor]) -> list[ParamState]:
        sizes = [p.numel() for p in params]
        momenta, second = state["momenta"].split(sizes, dim=1), state["second"].split(sizes, dim=1)
        pieces: list[ParamState] = [
            {"momenta": m, "second": v, "step": s} for m, v, s in zip(momenta, second, state["steps"].split(1))
        ]
        if self.config.scheduler:
            for piece, first in zip(pieces, state["first_square"].split(1)):
                piece["first_square"] = first
        if self.config.adapt_rate:
            for piece, last, log_adapt in zip(pieces, state["last"].split(sizes), state["log_adapt"].split(1)):
                piece["last"], piece["log_adapt"] = last, log_adapt
        return pieces

    # -- the step -------------------------------------------------------------------------------------------------

    @override
    def step(self, grads: Tensor, state: dict, params: Sequence[Tensor]) -> tuple[Tensor, dict]:
        return self._step(grads, state, params, None)

    def _step(self, grads: Tensor, state: dict, params: Sequence[Tensor], models: Tensor | None) -> tuple[Tensor, dict]:
        """:meth:`step`; with ``models`` (the model of each tensor), one scheduler factor per model."""
        layout = self._layout(params, grads)
        steps = state["steps"] + 1  # (T,)
        momenta = torch.lerp(state["momenta"], grads, layout.momentum_complements)  # (K, N)
        second = torch.lerp(state["second"], grads * grads, layout.second_complements)  # (J, N)
        new_state = {"momenta": momenta, "second": second, "steps": steps}
        corrections = torch.reciprocal(1 - torch.pow(layout.bases, steps))  # (K + J, T): 1 / (1 - b^t)
        multiplier: Tensor | float = 1.0
        if self.schedule is not None:
            mean_square = layout.all.mean((grads * grads)[None])[0]  # (T,)
            first = torch.where(steps == 1, mean_square, state["first_square"])
            new_state["first_square"] = first
            if models is None:
                multiplier = self.schedule(scheduler_features(steps, layout.inv_scales, mean_square, first))
            else:  # each model's factor, spread to its tensors (T,)
                count = int(models.max()) + 1
                features = scheduler_features_by_model(steps, layout.inv_scales, mean_square, first, models, count)
                multiplier = self.schedule(features).index_select(0, models)
        parts = []
        if layout.learned is not None:
            learned = self._learned_update(grads, momenta, second, corrections, steps, params, multiplier, layout)
            if self.config.adapt_rate:
                learned, new_state["log_adapt"] = self._adapt(learned, grads, state, layout.learned)
            parts.append((layout.learned, learned))
        if layout.adamw is not None:
            parts.append((layout.adamw, self._adamw_update(grads, momenta, second, corrections, params, multiplier,
                                                           layout)))  # fmt: skip
        if len(parts) == 1:
            update = parts[0][1]
        else:
            update = grads.new_zeros(grads.shape)
            for part, values in parts:
                assert part.index is not None  # both parts present: neither is the whole vector
                update = update.index_copy(0, part.index, values)
        if self.config.adapt_rate:
            new_state["last"] = update
        return update, new_state

    def _adapt(self, update: Tensor, grads: Tensor, state: dict, part: _Segments) -> tuple[Tensor, Tensor]:
        """The learned update with each tensor's step-size adaptation applied, and the new ``log_adapt`` ``(T,)``.

        Hypergradient descent on the log step (Baydin et al. 2018), per tensor and scale-free: the derivative of the
        loss with respect to the last step's size is the gradient's dot product with the last update, so a gradient
        that still points against the last update (the step was too short) lengthens the next, one that has turned
        (it overshot) shortens it. The cosine replaces the dot product, so neither the loss's scale nor the
        update's changes the rate.
        """
        cfg = self.config
        last = state["last"]
        if part.index is not None:
            grads, last = grads.index_select(0, part.index), last.index_select(0, part.index)
        sums = part.mean(torch.stack([grads * last, grads * grads, last * last]))  # (3, T_l)
        cosine = sums[0] * torch.rsqrt(sums[1] * sums[2] + _TINY)  # 0 at the first step (no last update)
        limit = math.log(cfg.adapt_limit)
        log_adapt = state["log_adapt"].index_select(0, part.tensors)
        log_adapt = (log_adapt - cfg.adapt_rate * cosine).clamp(-limit, limit)
        new = state["log_adapt"].index_copy(0, part.tensors, log_adapt)
        return update * part.spread(log_adapt.exp()[None])[0], new

    @override
    def step_in_place(
        self,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        state: dict,
        options: Sequence[tuple[float, float]],
        compile: bool = False,
    ) -> bool | None:
        """The drop-in step tensor by tensor on the parameters' storage (:mod:`metaopt.rules.tiny_inplace`)."""
        if not plain_tensors():
            return None
        return in_place_step(self, params, grads, state, options, compile)

    def _learned_update(
        self,
        grads: Tensor,
        momenta: Tensor,
        second: Tensor,
        corrections: Tensor,
        steps: Tensor,
        params: Sequence[Tensor],
        multiplier: Tensor | float,
        layout: _Layout,
    ) -> Tensor:
        """``(L,)``: the normalised learned update of the learned tensors' coordinates."""
        cfg = self.config
        part = layout.learned
        assert part is not None
        k = len(cfg.momentum_decays)
        if part.index is not None:  # only some tensors: their coordinates
            grads = grads.index_select(0, part.index)
            momenta = momenta[:k].index_select(1, part.index)
            second = second[0].index_select(0, part.index)
        else:
            momenta, second = momenta[:k], second[0]
        per_tensor = corrections.index_select(1, part.tensors)  # (K' + J, T_l)
        spread = part.spread(torch.cat([per_tensor[:k], per_tensor[layout.second_row : layout.second_row + 1]]))
        v_hat = second * spread[k]
        squares = [v_hat]
        values = None
        if cfg.param_feature or cfg.param_scale or cfg.weight_decay:
            values = torch.cat([params[i].reshape(-1) for i in part.tensor_list]).to(grads.dtype)
        if cfg.param_feature or cfg.param_scale:  # the parameter's root mean square (the decay needs only the values)
            assert values is not None
            squares.append(values * values)
        means = part.mean(torch.stack(squares))  # (1 or 2, T_l)
        mean_v = means[0]
        denominator = torch.rsqrt(v_hat + part.spread((mean_v * cfg.eps + _TINY)[None])[0])
        inputs = [grads * denominator, momenta * spread[:k] * denominator]
        if cfg.param_feature:
            assert values is not None
            inputs.append(values * part.spread(torch.rsqrt(means[1:2] + 1e-12)))
        x = torch.cat([inputs[0][None], *inputs[1:]])  # (F, L)
        time = torch.tanh(steps.index_select(0, part.tensors)[None] * layout.inv_scales)  # (S, T_l)
        bias = part.spread(torch.addmm(self.b_in[:, None], self.w_time, time))  # (H, L)
        hidden = torch.addmm(bias, self.w_in, x).relu_()
        for layer in range(1, cfg.num_layers):
            hidden = torch.addmm(getattr(self, f"b_{layer}")[:, None], getattr(self, f"w_{layer}"), hidden).relu_()
        direction = torch.addmm(self.w_skip @ x, self.w_out, hidden)[0]  # (L,)
        if cfg.orthogonalize:
            pieces = direction.split(part.sizes)
            dtype = ns_dtype(cfg.ns_dtype)
            ns = functools.partial(orthogonalize, steps=cfg.ns_steps, block=cfg.ns_block, dtype=dtype,
                                   method=cfg.ns_method)  # fmt: skip
            direction = torch.cat([
                piece if shape is None else ns(piece.view(shape)).reshape(-1)
                for piece, shape in zip(pieces, part.matrices)
            ])  # fmt: skip
        rms = part.mean((direction * direction)[None])[0]  # (T_l,)
        size = (mean_v > 0).to(rms.dtype) * part.mup * (cfg.step_size * self.log_step.exp())  # each tensor's step
        if cfg.param_scale:
            size = size * torch.sqrt(means[1].clamp_min(cfg.param_floor**2))  # max(rms(p), floor), no 1/0 slope
        size = size * _of_part(multiplier, part)
        update = direction * part.spread((torch.rsqrt(rms + _TINY) * size)[None])[0]
        if cfg.weight_decay:
            assert values is not None
            decay_size = size if cfg.weight_decay_mup else size / part.mup
            update = update - cfg.weight_decay * values * part.spread(decay_size[None])[0]
        return update

    def _adamw_update(
        self,
        grads: Tensor,
        momenta: Tensor,
        second: Tensor,
        corrections: Tensor,
        params: Sequence[Tensor],
        multiplier: Tensor | float,
        layout: _Layout,
    ) -> Tensor:
        """``(A,)``: AdamW's update of the other tensors' coordinates (as ``torch.optim.AdamW`` computes it)."""
        cfg = self.config
        part = layout.adamw
        assert part is not None
        m, v = momenta[layout.adamw_momentum], second[layout.adamw_second]
        if part.index is not None:
            m, v = m.index_select(0, part.index), v.index_select(0, part.index)
        lr = cfg.adamw_lr * self.adamw_log_scale.exp() * multiplier
        assert not isinstance(multiplier, Tensor) or multiplier.dim() == 0  # per model only with learned_tensors: all
        per_tensor = corrections.index_select(1, part.tensors)
        c1 = per_tensor[layout.adamw_momentum]
        c2 = per_tensor[len(layout.momentum_decays) + layout.adamw_second]
        spread = part.spread(torch.stack([lr * c1, c2.sqrt()]))
        # the clamp only keeps sqrt's slope finite at v = 0 (where m = 0 and the update is 0 whatever the denominator)
        update = -spread[0] * m / (v.clamp_min(_TINY).sqrt() * spread[1] + cfg.adamw_eps)
        if cfg.adamw_weight_decay:
            values = torch.cat([params[i].reshape(-1) for i in part.tensor_list]).to(grads.dtype)
            update = update - (lr * cfg.adamw_weight_decay) * values
        return update

    def _layout(self, params: Sequence[Tensor], grads: Tensor) -> _Layout:
        key = (tuple(tuple(p.shape) for p in params), grads.dtype, grads.device)
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) >= MAX_LAYOUTS:  # the oldest goes: a stacked family meets a new list of shapes often
                del self._layouts[next(iter(self._layouts))]
            layout = self._layouts[key] = _Layout(key[0], self, grads.dtype, grads.device)
        return layout


def _of_part(multiplier: Tensor | float, part: _Segments) -> Tensor | float:
    """The scheduler's factor for the tensors of ``part``: one for all, or each tensor's own (a tensor ``(T,)``)."""
    if isinstance(multiplier, Tensor) and multiplier.dim() == 1:
        return multiplier.index_select(0, part.tensors)
    return multiplier


_TENSOR_STATE = ("last", "log_adapt")
"""State of the step-size adaptation: the last update (per coordinate) and each tensor's log factor."""

_DENSE_AVERAGE_LIMIT = 2**20
"""Largest N * T for which per-tensor means are one product with a dense ``(N, T)`` averaging matrix."""


class _Segments:
    """Some tensors of a step, as contiguous segments of their own flat vector: means per tensor, spreading back.

    Args:
        tensors: positions of the tensors among the step's.
        sizes: their numbers of coordinates.
        offsets: where each tensor starts in the step's flat vector.
        whole: whether these are all the step's tensors (no gather needed).
    """

    def __init__(self, tensors: list[int], sizes: list[int], offsets: list[int], whole: bool, dtype, device):
        self.tensor_list = tensors
        self.tensors = torch.tensor(tensors, dtype=torch.long, device=device)
        self.index: Tensor | None = None
        """``(n,)``: the coordinates of these tensors in the step's flat vector (None when they are all of it)."""
        if not whole:
            self.index = torch.cat([torch.arange(offsets[i], offsets[i] + sizes[i], device=device) for i in tensors])
        own = [sizes[i] for i in tensors]
        self.sizes = own
        self.lengths = torch.tensor(own, device=device)
        self.ids = torch.repeat_interleave(torch.arange(len(own), device=device), self.lengths)
        counts = torch.tensor(own, dtype=dtype, device=device)
        self.inv_counts = 1 / counts
        self.averager: Tensor | None = None
        if sum(own) * len(own) <= _DENSE_AVERAGE_LIMIT:
            self.averager = (torch.nn.functional.one_hot(self.ids, len(own)).to(dtype) / counts).contiguous()
        self.mup = torch.ones(len(tensors), dtype=dtype, device=device)
        """``(T_l,)``: the muP factor of each tensor (set by the layout)."""
        self.matrices: list[tuple[int, int] | None] = [None] * len(tensors)
        """Each tensor as ``(rows, the rest)`` when it has two or more dimensions, else None (set by the layout)."""

    def mean(self, values: Tensor) -> Tensor:
        """``(F, T_l)``: the mean of each row of ``values: (F, n)`` over each tensor's coordinates."""
        if self.averager is not None:
            return values @ self.averager
        # one sum per tensor over its slice (segment_reduce puts a whole segment on one GPU thread: 100x slower at 1M)
        sums = torch.stack([piece.sum(1) for piece in values.split(self.sizes, dim=1)], dim=1)
        return sums * self.inv_counts

    def spread(self, per_tensor: Tensor) -> Tensor:
        """``(F, n)``: each tensor's column of ``per_tensor: (F, T_l)`` repeated over its coordinates."""
        return per_tensor.index_select(1, self.ids)


class _Layout:
    """What a step needs about a list of parameter shapes, computed once: the learned and AdamW parts, constants."""

    def __init__(self, shapes: tuple[tuple[int, ...], ...], rule: TinyRule, dtype: torch.dtype, device: torch.device):
        cfg = rule.config
        sizes = [math.prod(shape) for shape in shapes]
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        everything = list(range(len(shapes)))
        self.all = _Segments(everything, sizes, offsets, True, dtype, device)
        mask = learned_tensor_mask(shapes, cfg.learned_tensors)
        chosen = [i for i in everything if mask[i]]
        rest = [i for i in everything if not mask[i]]
        self.learned = _Segments(chosen, sizes, offsets, not rest, dtype, device) if chosen else None
        self.adamw = _Segments(rest, sizes, offsets, not chosen, dtype, device) if rest else None
        if self.learned is not None and cfg.mup:
            fan_ins = [math.prod(shapes[i][1:]) if len(shapes[i]) >= 2 else cfg.base_fan_in for i in chosen]
            factors = [mup_factor(cfg.base_fan_in, f, cfg.mup_cap) for f in fan_ins]
            self.learned.mup = torch.tensor(factors, dtype=dtype, device=device)
        if self.learned is not None:
            ortho = matrix_mask(shapes, cfg.ns_matrices)
            self.learned.matrices = [(shapes[i][0], sizes[i] // shapes[i][0]) if ortho[i] and sizes[i]
                                     else None for i in chosen]  # fmt: skip
        self.momentum_decays = rule._momentum_decays
        second_decays = rule._second_decays
        self.momentum_complements = 1 - torch.tensor(self.momentum_decays, dtype=dtype, device=device)[:, None]
        self.second_complements = 1 - torch.tensor(second_decays, dtype=dtype, device=device)[:, None]
        bases = self.momentum_decays + second_decays
        self.bases = torch.tensor(bases, dtype=dtype, device=device)[:, None]  # (K + J, 1)
        self.second_row = len(self.momentum_decays)
        """Row of the MLP's second moment in the corrections."""
        self.adamw_momentum = self.momentum_decays.index(cfg.adamw_betas[0]) if cfg.learned_tensors != "all" else 0
        self.adamw_second = second_decays.index(cfg.adamw_betas[1]) if cfg.learned_tensors != "all" else 0
        self.inv_scales = 1 / torch.tensor(cfg.time_scales, dtype=dtype, device=device)[:, None]  # (S, 1)
