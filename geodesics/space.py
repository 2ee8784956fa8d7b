"""Flat parameter space of a task's model, and the batched loss over many flat vectors at once (under every finder).

DSS works on points theta in R^P. ``ParamSpace`` maps a model to its flat vector and back, and evaluates the loss of
B vectors in one pass with ``torch.func.vmap`` over ``torch.func.functional_call``, in chunks that fit a memory budget,
or loops over the models, loading each vector into one model.

The strategy is fixed when the space is made, never by a timing measurement, because it decides the numerics:

* ``loop`` (the default on CPU) is **exact**: a vector's loss and gradient are bit for bit those of the vector
  evaluated alone, whatever else shares the batch. So a string's result does not depend on which other strings run
  beside it, and a resumed run (which batches its remaining work differently) gives the numbers of an uninterrupted
  one.
* ``vmap`` (the default on CUDA, where one kernel launch per model is the cost that batching removes) agrees with the
  loop to rounding (a few 1e-7 relative on CPU, measured), but a batched matmul may round a row differently
  depending on the batch it is in. Runs are reproducible with the same batches, not across batch compositions.
* ``bmm`` (opt-in, MLP tasks only: a plain ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations)
  runs each layer of a whole chunk as one explicit matmul, bias folded in, and writes the backward pass out with
  ``bmm`` (:mod:`geodesics.batched_mlp`). It agrees with the loop to rounding; like ``vmap`` it is not counted as
  exact (see :attr:`ParamSpace.exact`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from envs.errors import InvalidValue
from envs.task import Batch, Task
from geodesics.batched_mlp import MLPPlan, UnsupportedModel, mlp_plan

__all__ = ["STRATEGIES", "ParamSpace", "check_strategy", "default_strategy"]

_CPU_BUDGET = 64 << 20  # bytes of activations per chunk on CPU: larger chunks fall out of cache and run slower
# bmm materialises every layer of a chunk at once: on CPU its chunks are best at 16 MiB (measured on digits_mlp and
# poly_quadratic, 1 thread: 1.4-1.7x faster evaluation losses and gradients than at 64 MiB); its rows do not depend on
# the chunking, so the budget changes only the speed
_CPU_BUDGET_BMM = 16 << 20
_CUDA_BUDGET_FRACTION = 0.25  # of the free memory


STRATEGIES = ("auto", "loop", "vmap", "bmm")


def check_strategy(owner: Any, key: str = "strategy") -> None:
    """Check, in a command schema's ``__post_init__``, that ``owner.key`` is one of :data:`STRATEGIES`.

    Whether ``bmm`` fits the task's model is checked when the space is made, before a run writes anything.

    Raises:
        InvalidValue: any other value (``load_config`` names the full key).
    """
    value = getattr(owner, key)
    if value not in STRATEGIES:
        raise InvalidValue(type(owner), key, value, f"must be one of {', '.join(STRATEGIES)}, got {value!r}")


def default_strategy(device: torch.device) -> str:
    """``loop`` on CPU (exact, and as fast for the batch sizes DSS makes there, measured), ``vmap`` on CUDA."""
    return "vmap" if torch.device(device).type == "cuda" else "loop"


class ParamSpace:
    """A task's model as flat vectors theta of size P, with batched evaluation.

    Args:
        task: the task whose model and loss are used.
        model: a model of the task to take the architecture from (copied; default ``task.init_model(0)``).
        memory_budget: bytes of activations a chunk may use (default: 64 MiB on CPU, where bigger chunks fall out of
            cache and get slower per model, measured, 16 MiB for ``bmm``; a quarter of the free memory on CUDA).
        strategy: ``"loop"`` (exact: every row as if evaluated alone), ``"vmap"`` (batched kernels, rows agree with
            the loop to rounding), ``"bmm"`` (MLPs only: explicit batched matmuls and a hand-written backward,
            rows agree with the loop to rounding), or ``"auto"`` (:func:`default_strategy` of the task's device).
            Recorded in :attr:`strategy`.

    Raises:
        ValueError: for models with BatchNorm (or any other buffers): their running statistics are not parameters, so
            interpolating weights would not interpolate the function; and ``strategy="bmm"`` for a model that is not
            a plain MLP (the message names the strategies valid for the task).
    """

    def __init__(
        self, task: Task, model: nn.Module | None = None, memory_budget: int | None = None, strategy: str = "auto"
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        self.task = task
        # a private copy: the loop strategy loads vectors into it, and a caller's model must stay untouched
        self.model = copy.deepcopy(model) if model is not None else task.init_model(0)
        _reject_buffers(self.model, task.name)
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self._name_set = set(self.names)
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.num_params = sum(self.numels)
        self.device = task.device
        self.dtype = task.dtype
        self._strategy = default_strategy(self.device) if strategy == "auto" else strategy
        self._plan: MLPPlan | None = None
        if self._strategy == "bmm":
            try:
                self._plan = mlp_plan(self.model, self.names, task)
            except UnsupportedModel as reason:
                valid = ", ".join(s for s in STRATEGIES if s != "bmm")
                raise ValueError(
                    f"strategy 'bmm' needs a model that is a plain nn.Sequential of nn.Linear layers and elementwise "
                    f"activations (Sigmoid, Tanh, ReLU, Identity); task {task.name!r}: {reason}. Valid strategies "
                    f"for this task: {valid}"
                ) from None
        self._budget = memory_budget
        self._per_model_bytes: dict[tuple[int, ...], int] = {}
        self.evaluations = 0
        """Losses computed so far, one per model: on one batch or on the whole evaluation set, with or without a
        gradient (what the finders' ``max_evaluations`` budget counts)."""
        self.gradients = 0
        """Of those, the ones computed with their gradient (``batched_value_and_grad`` rows)."""

    @classmethod
    def from_task(cls, task: Task, **kwargs: Any) -> ParamSpace:
        """The parameter space of ``task``'s model."""
        return cls(task, **kwargs)

    # -- vectors <-> models -------------------------------------------------------------------------------------------

    def flatten(self, model: nn.Module) -> Tensor:
        """``(P,)``: the model's parameters concatenated in ``named_parameters()`` order (a detached copy)."""
        params = dict(model.named_parameters())
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ValueError(f"model does not match task {self.task.name!r}: missing parameters {missing}")
        flat = torch.cat([params[n].detach().reshape(-1) for n in self.names])
        return self.check(flat).clone()

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """Parameter tensors (views into ``theta``) by name; ``theta`` may be (P,) or batched (B, P)."""
        lead = theta.shape[:-1]
        out, offset = {}, 0
        for name, shape, numel in zip(self.names, self.shapes, self.numels):
            out[name] = theta[..., offset : offset + numel].reshape(*lead, *shape)
            offset += numel
        return out

    @torch.no_grad()
    def load_into(self, model: nn.Module, theta: Tensor) -> nn.Module:
        """Copy ``theta`` (P,) into ``model``'s parameters in place; returns the model."""
        params = dict(model.named_parameters())
        for name, value in self.unflatten(self.check(theta)).items():
            params[name].copy_(value)
        return model

    def to_model(self, theta: Tensor) -> nn.Module:
        """A new model of the task holding ``theta``."""
        return self.load_into(self.task.init_model(0), theta)

    def check(self, thetas: Tensor, batched: bool = False) -> Tensor:
        """Validate a vector (P,) or batch (B, P) and move it to the space's device and dtype."""
        if not isinstance(thetas, Tensor):
            raise TypeError(f"expected a tensor of parameters, got {type(thetas).__name__}")
        want = 2 if batched else 1
        if thetas.dim() != want or thetas.shape[-1] != self.num_params:
            shape = "(B, P)" if batched else "(P,)"
            raise ValueError(
                f"expected parameter {'vectors' if batched else 'vector'} of shape {shape} with P = {self.num_params} "
                f"(task {self.task.name!r}), got shape {tuple(thetas.shape)}"
            )
        if not thetas.is_floating_point():
            raise ValueError(f"parameter vectors must be floating point, got {thetas.dtype}")
        return thetas.to(device=self.device, dtype=self.dtype)

    # -- losses -------------------------------------------------------------------------------------------------------

    def loss(self, theta: Tensor, batch: Batch) -> Tensor:
        """Differentiable scalar loss of one flat vector on ``batch``."""
        inputs, targets = batch
        return self.task.criterion(functional_call(self.model, self.unflatten(theta), (inputs,)), targets)

    def batched_loss(self, thetas: Tensor, batch: Batch) -> Tensor:
        """``(B,)`` losses of ``thetas (B, P)`` on one batch (no gradient)."""
        thetas = self.check(thetas, batched=True)
        self.evaluations += thetas.shape[0]
        return self._batch_losses(thetas, batch)

    def batched_value_and_grad(self, thetas: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(losses (B,), grads (B, P))`` of ``thetas (B, P)`` on one batch."""
        thetas = self.check(thetas, batched=True)
        self.evaluations += thetas.shape[0]
        self.gradients += thetas.shape[0]
        parts = self._chunked_pairs(thetas, batch)
        if len(parts) == 1:
            return parts[0]  # one chunk: no copy of the (B, P) gradients
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def batched_eval_loss(self, thetas: Tensor) -> Tensor:
        """``(B,)`` losses on the task's fixed evaluation set: the example-weighted mean over its chunks."""
        thetas = self.check(thetas, batched=True)
        self.evaluations += thetas.shape[0]  # one evaluation per model, however many chunks the set has
        total = torch.zeros(thetas.shape[0], device=self.device, dtype=torch.float64)
        count = 0
        for batch in self.task.eval_batches():
            weight = int(batch[1].shape[0])
            total += self._batch_losses(thetas, batch).to(torch.float64) * weight
            count += weight
        return (total / count).to(self.dtype)

    def eval_loss(self, theta: Tensor) -> float:
        """Evaluation loss of one vector."""
        return float(self.batched_eval_loss(self.check(theta).unsqueeze(0))[0])

    @property
    def strategy(self) -> str:
        """``"loop"``, ``"vmap"`` or ``"bmm"``: how batches are evaluated (fixed at construction)."""
        return self._strategy

    @property
    def exact(self) -> bool:
        """Whether a row's result is independent of the batch it is evaluated in (the loop strategy)."""
        return self._strategy == "loop"

    # -- internals ----------------------------------------------------------------------------------------------------

    def _batch_losses(self, thetas: Tensor, batch: Batch) -> Tensor:
        with torch.no_grad():
            return self._chunked(thetas, batch, lambda c: self._losses(c, batch, self._strategy))

    def _losses(self, chunk: Tensor, batch: Batch, strategy: str) -> Tensor:
        if self._plan is not None:
            return self._plan.losses(self.task, chunk, batch)
        if strategy == "vmap":
            return vmap(lambda theta: self.loss(theta, batch))(chunk)
        # the loop: copy each vector into the space's own model and run it, the cheapest one-at-a-time evaluation
        inputs, targets = batch
        out = []
        for theta in chunk:
            self.load_into(self.model, theta)
            out.append(self.task.criterion(self.model(inputs), targets))
        return torch.stack(out)

    def _values_and_grads(self, chunk: Tensor, batch: Batch, strategy: str) -> tuple[Tensor, Tensor]:
        if self._plan is not None:
            return self._plan.values_and_grads(self.task, chunk, batch)
        if strategy == "vmap":
            grads, values = vmap(grad_and_value(lambda theta: self.loss(theta, batch)))(chunk)
            return values.detach(), grads.detach()
        params = [p for n, p in self.model.named_parameters() if n in self._name_set]
        values, grads = [], []
        for theta in chunk:
            self.load_into(self.model, theta)
            loss = self.task.loss(self.model, batch)
            grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
            values.append(loss.detach())
        return torch.stack(values), torch.stack(grads)

    def _chunk_size(self, batch: Batch) -> int:
        key = tuple(batch[0].shape)
        if key not in self._per_model_bytes:
            weights = 3 * self.num_params * _itemsize(self.dtype)  # the vector, its unflattened views, a gradient
            self._per_model_bytes[key] = _activation_bytes(self.model, batch[0]) + weights
        budget = self._budget or _default_budget(self.device, self._strategy)
        return max(1, budget // max(1, self._per_model_bytes[key]))

    def _chunked(self, thetas: Tensor, batch: Batch, fn: Callable[[Tensor], Tensor]) -> Tensor:
        size = self._chunk_size(batch)
        return torch.cat([fn(thetas[i : i + size]) for i in range(0, thetas.shape[0], size)])

    def _chunked_pairs(self, thetas: Tensor, batch: Batch) -> list[tuple[Tensor, Tensor]]:
        size = max(1, self._chunk_size(batch) // 3)  # backward keeps activations and their gradients
        chunks = [thetas[i : i + size] for i in range(0, thetas.shape[0], size)]
        return [self._values_and_grads(c, batch, self._strategy) for c in chunks]


def _reject_buffers(model: nn.Module, task_name: str) -> None:
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    buffers = [n for n, _ in model.named_buffers()]
    if norms or buffers:
        what = f"BatchNorm layers ({', '.join(norms)})" if norms else f"buffers ({', '.join(buffers)})"
        raise ValueError(
            f"task {task_name!r} has a model with {what}: DSS interpolates parameters, and running statistics are "
            "not parameters, so the interpolated model would not be the interpolated function. Models with BatchNorm "
            "are not supported yet; use a variant without it (e.g. GroupNorm-free or norm-free)."
        )


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _activation_bytes(model: nn.Module, inputs: Tensor) -> int:
    """Bytes of every leaf module's output for one forward pass on ``inputs`` (a proxy for peak activation memory)."""
    total = 0

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel() * output.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            out = model(inputs)
        total += out.numel() * out.element_size() if isinstance(out, Tensor) else 0
    finally:
        for handle in handles:
            handle.remove()
    return max(total, inputs.numel() * inputs.element_size())


def _default_budget(device: torch.device, strategy: str) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * _CUDA_BUDGET_FRACTION)
    return _CPU_BUDGET_BMM if strategy == "bmm" else _CPU_BUDGET
