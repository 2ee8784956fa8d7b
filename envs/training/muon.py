"""Muon on weight matrices and AdamW on the rest, as one optimizer: ``muon``.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers in neural networks"; Liu et al. 2025, "Muon is
scalable for LLM training") replaces a weight matrix's step by its momentum *orthogonalized*: a few Newton-Schulz
iterations push every singular value of the (Nesterov) momentum towards 1, so that the step moves all directions of
the matrix by the same amount instead of mostly its top singular directions. ``torch.optim.Muon`` implements it for 2D
tensors only and leaves the rest (biases, and whatever the user chooses) to another optimizer; this class is both in
one ``torch.optim.Optimizer`` with one learning rate, so the comparison harness can tune it on its grid like Adam:

* the matrices (``matrices: all``, every tensor of two or more dimensions, a convolution's kernel seen as
  ``out x (in * kh * kw)``; ``hidden``, all of them but the first and the last in the parameters' order, Muon's own
  recommendation for large models; ``none``, none) get Muon's step, with the learning rate multiplied by
  ``0.2 sqrt(max(rows, cols))`` (Liu et al.'s adjustment: the step's root mean square is then AdamW's, so one rate
  serves both parts);
* the other tensors get ``torch.optim.AdamW``'s step at the same rate.

What this project changed: the Newton-Schulz iterations run in the parameter's dtype (``torch.optim.Muon`` runs them in
bfloat16, which rounds away more than a small model's step can afford), and on wide matrices of 128 rows or more
they run on the Gram matrix (:func:`gram_newton_schulz`: the same iterations in exact arithmetic, fewer multiply-adds);
the quintic coefficients, the Nesterov momentum and the decoupled weight decay are ``torch.optim.Muon``'s. Weight
decay defaults to 0, as the other baselines' (the harness compares optimizers, not regularisers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "MATRICES",
    "MuonAdamW",
    "gram_newton_schulz",
    "gram_pays",
    "matrix_mask",
    "newton_schulz_factor",
    "orthogonalize",
]

MATRICES = ("all", "hidden", "none")
"""Which tensors of two or more dimensions get Muon's step (the rest get AdamW's)."""

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""The quintic Newton-Schulz coefficients of Muon (and ``torch.optim.Muon``)."""

NS_METHODS = ("auto", "standard", "gram")
"""How ``orthogonalize`` computes the iterations (the same result in exact arithmetic)."""

GRAM_MIN_ROWS = 128
"""``auto`` iterates on the Gram matrix from this many rows (of the shorter side or of a block) ..."""

GRAM_MIN_ASPECT = 2
"""... where the longer side is at least this many times the shorter."""


def orthogonalize(
    matrix: Tensor, steps: int = 5, eps: float = 1e-7, block: int = 0, dtype: torch.dtype | None = None,
    method: str = "auto",
) -> Tensor:  # fmt: skip
    """``matrix`` with its singular values pushed towards 1 by ``steps`` quintic Newton-Schulz iterations.

    ``matrix`` is 2D or a batch ``(R, m, n)`` (each matrix its own result). Returns ``U S' V^T`` where ``U S V^T`` is
    the SVD of ``matrix`` and ``S'`` lies roughly in [0.7, 1.2] for the singular values that are not tiny (the
    coefficients trade exactness for speed, as Muon's do); the result has the dtype of ``matrix``.

    ``block`` > 0 caps the cost where both sides are longer than ``block``: the shorter side is cut into groups of
    ``block`` (the last one shorter) and each group, ``block x`` the longer side, is orthogonalized on its own, in one
    batched iteration. An ``m x n`` matrix (``m <= n``) then costs about ``10 block m n`` multiply-adds instead of
    ``10 m^2 n + 5 m^3``, a fixed cost per coordinate whatever the width; the rows of one group come out orthogonal to
    each other, not to the other groups' (the block-wise orthogonalization of MuonBP, Khaled et al. 2025, without
    its periodic full step). A matrix with a side of at most ``block`` is orthogonalized whole, as with ``block=0``.

    ``dtype`` (default: the matrix's) is the dtype the iterations run in; ``torch.bfloat16`` is Muon's choice: about
    2x faster products where the processor has bfloat16 arithmetic (AVX512-BF16, AMX, a GPU's tensor cores), and the
    result off by about 1% relative, small beside the spread of the iteration's singular values.

    ``method`` picks how the iterations are computed; both give the same result in exact arithmetic. ``standard``
    iterates on the ``m x n`` matrix itself (``m <= n``): ``10 m^2 n + 5 m^3`` multiply-adds. ``gram`` iterates on
    its ``m x m`` Gram matrix alone (:func:`gram_newton_schulz`): ``2 m^2 n + 17 m^3``, fewer where the matrix (or
    its block) is wide. ``auto`` (the default) takes ``gram`` where it pays and keeps its rounding close:
    :func:`gram_pays`.
    """
    if method not in NS_METHODS:
        raise ValueError(f"method must be one of {', '.join(NS_METHODS)}, got {method!r}")
    if dtype is not None and dtype != matrix.dtype:
        return orthogonalize(matrix.to(dtype), steps, eps, block, method=method).to(matrix.dtype)
    wide = matrix.shape[-2] <= matrix.shape[-1]
    x = matrix if wide else matrix.mT
    if 0 < block < x.shape[-2]:
        rows, cols = x.shape[-2:]
        whole = rows // block * block
        head = x[..., :whole, :].reshape(-1, block, cols)
        parts = [orthogonalize(head, steps, eps, method=method).reshape(*x.shape[:-2], whole, cols)]
        if whole < rows:
            parts.append(orthogonalize(x[..., whole:, :], steps, eps, method=method))
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)  # no copy when the groups divide evenly
        return x if wide else x.mT
    a, b, c = NS_COEFFICIENTS
    batched = x.dim() == 3
    product = torch.baddbmm if batched else torch.addmm
    norm = x.norm(dim=(-2, -1), keepdim=True) if batched else x.norm()
    x = x / norm.clamp_min(eps)  # every singular value <= 1: inside the iteration's basin
    if method == "gram" or (method == "auto" and gram_pays(x)):
        x = gram_newton_schulz(x, steps)
        return x if wide else x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = product(x, product(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.mT


def gram_pays(x: Tensor) -> bool:
    """Whether ``orthogonalize``'s ``auto`` iterates on the Gram matrix of ``x`` (``m x n``, ``m <= n``, or a batch).

    Where ``m`` is at least ``GRAM_MIN_ROWS`` and ``n`` at least ``GRAM_MIN_ASPECT`` times ``m``, in float32 or
    float64: there the Gram form's fewer multiply-adds pay for its more, smaller products (one thread on a CPU: 1.5x
    faster at 128 x 512, 1.7x at 256 x 965; 0.5x at 16 x 64, 0.75x square). It pays at 64 rows too (3x on batches of
    64 x 965), but 64-row matrices keep the standard iteration under ``auto``, so that the 64-input layers of the
    recorded comparisons keep their rounding (``method="gram"`` asks for it). Not in bfloat16 or float16, where its
    rounding is 3-4x the standard iteration's (5% against 1.5%, relative to float64).
    In float32 it differs from the standard iteration by about the standard's own error on well-conditioned matrices
    and by up to about 2e-4 relative on ill-conditioned ones (the Gram matrix squares the condition number), beside
    the iteration's spread of singular values over [0.7, 1.2].
    """
    rows, cols = x.shape[-2:]
    return x.dtype in (torch.float32, torch.float64) and rows >= GRAM_MIN_ROWS and cols >= GRAM_MIN_ASPECT * rows


def gram_newton_schulz(x: Tensor, steps: int) -> Tensor:
    """Muon's quintic Newton-Schulz iterations of ``x`` computed on its Gram matrix.

    ``x`` is ``m x n`` (``m <= n``) or a batch of them, already scaled to a norm of at most 1.

    Each iteration is ``x <- p(A) x`` with ``A = x x^T`` and ``p(A) = a I + b A + c A^2``. Every ``p(A)`` is a
    polynomial in the first Gram matrix ``A_0``, so they commute: after ``k`` iterations ``x_k = Q_k x_0`` with
    ``Q_k = p(A_{k-1}) ... p(A_0)`` and ``A_k = x_k x_k^T = p(A_{k-1}) A_{k-1} p(A_{k-1})``. The ``m x n`` matrix is
    touched twice (``A_0`` and ``Q x_0``), the rest is ``m x m`` products: ``2 m^2 n + 17 m^3`` multiply-adds for five
    iterations against ``10 m^2 n + 5 m^3``.
    """
    return newton_schulz_factor(x, steps) @ x


def newton_schulz_factor(x: Tensor, steps: int) -> Tensor:
    """``Q_steps``, the ``m x m`` factor with :func:`gram_newton_schulz` ``(x) = Q x`` (``x`` as there; ``steps >= 1``).

    The product of the iterations' polynomials, each in the Gram matrix of the iterate before it.
    """
    a, b, c = NS_COEFFICIENTS
    gram = x @ x.mT
    accumulated: Tensor | None = None
    for k in range(steps):
        poly = torch.matmul(gram, gram).mul_(c).add_(gram, alpha=b)
        poly.diagonal(dim1=-2, dim2=-1).add_(a)
        accumulated = poly if accumulated is None else poly @ accumulated
        if k < steps - 1:
            gram = poly @ (poly @ gram)
    assert accumulated is not None
    return accumulated


def matrix_mask(shapes: Sequence[tuple[int, ...]], matrices: str) -> list[bool]:
    """Which tensors (in order) get Muon's step."""
    positions = [i for i, shape in enumerate(shapes) if len(shape) >= 2]
    chosen = set(positions) if matrices == "all" else set(positions[1:-1]) if matrices == "hidden" else set()
    return [i in chosen for i in range(len(shapes))]


class MuonAdamW(torch.optim.Optimizer):
    """Muon on weight matrices, AdamW on every other tensor, one learning rate (see the module docstring).

    Args:
        params: parameters or parameter groups; the choice of matrices follows their order across groups.
        lr: learning rate of both parts (Muon's is multiplied by ``0.2 sqrt(max(rows, cols))`` per matrix).
        momentum: Muon's momentum.
        nesterov: Muon's Nesterov momentum.
        ns_steps: Newton-Schulz iterations.
        betas: AdamW's moment decays.
        eps: AdamW's epsilon.
        weight_decay: decoupled weight decay of both parts.
        matrices: ``all``, ``hidden`` or ``none`` (then exactly ``torch.optim.AdamW``).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        matrices: str = "all",
    ):
        if matrices not in MATRICES:
            raise ValueError(f"matrices must be one of {', '.join(MATRICES)}, got {matrices!r}")
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1:
            raise ValueError(f"ns_steps must be an integer >= 1, got {ns_steps!r}")
        given = list(params)
        groups: list[dict[str, Any]] = [g for g in given if isinstance(g, dict)] or [{"params": given}]
        groups = [{**group, "params": list(group["params"])} for group in groups]  # a generator is read once
        shapes = [tuple(p.shape) for group in groups for p in group["params"]]
        mask = iter(matrix_mask(shapes, matrices))
        for group in groups:
            group["muon"] = [next(mask) for _ in group["params"]]
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, betas=betas, eps=eps,
                        weight_decay=weight_decay)  # fmt: skip
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]  # torch's signature, untyped there
        """One step of every parameter with a gradient; ``closure`` re-evaluates the loss (returned)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            for param, is_matrix in zip(group["params"], group["muon"]):
                if param.grad is None:
                    continue
                if torch.is_complex(param) or param.grad.is_sparse:
                    raise RuntimeError("muon: complex parameters and sparse gradients are not supported")
                state = self.state[param]
                if decay:
                    param.mul_(1 - lr * decay)
                if is_matrix:
                    self._muon(param, state, group)
                else:
                    self._adamw(param, state, group)
        return loss

    @staticmethod
    def _muon(param: Tensor, state: dict, group: dict) -> None:
        grad = param.grad
        assert grad is not None
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(grad)
        buffer = state["momentum_buffer"]
        buffer.mul_(group["momentum"]).add_(grad)
        direction = grad.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer
        flat = direction.reshape(direction.shape[0], -1)
        update = orthogonalize(flat, group["ns_steps"])
        scale = 0.2 * math.sqrt(max(flat.shape))
        param.add_(update.view_as(param), alpha=-group["lr"] * scale)

    @staticmethod
    def _adamw(param: Tensor, state: dict, group: dict) -> None:
        grad = param.grad
        assert grad is not None
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = state["step"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = group["lr"] / (1 - beta1**t)
        denominator = (exp_avg_sq.sqrt() / (1 - beta2**t) ** 0.5).add_(group["eps"])
        param.addcdiv_(exp_avg, denominator, value=-step_size)
