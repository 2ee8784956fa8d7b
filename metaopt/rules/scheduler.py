"""A learned global scheduler: a tiny network that turns training-progress features into one step multiplier.

Follows Celo (Moudgil et al. 2025), which keeps the learning-rate schedule out of the per-parameter rule and learns
it with a separate small network over loss and progress features. What this project changed: a
:class:`~metaopt.rules.base.LearnedRule` sees gradients, its own state and the parameters, never the loss, so the
features are the ones a rule can compute and that do not change when the loss is multiplied by a constant:

* progress, ``tanh(t / s)`` for each time scale ``s`` (the step count t of each tensor, averaged over tensors);
* a loss proxy, ``0.5 log((mean g_t^2 + tiny) / (mean g_1^2 + tiny))`` per tensor, averaged over tensors: how far
  the gradient's root mean square has fallen since the first step (scale-free: a loss scaled by c scales both).

The network is ``Linear(F, H) -> ReLU -> Linear(H, 1)`` and the multiplier ``2 sigmoid(out)``, in (0, 2); its output
layer starts at zero, so an untrained scheduler multiplies by exactly 1. One call per step costs O(F H) flops on top
of one reduction over the tensors: nothing per coordinate.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["GlobalScheduler", "scheduler_features", "scheduler_features_by_model"]

_TINY = 1e-30
"""Floor inside the log ratio: a tensor whose gradients are all zero contributes log(1) = 0."""


def scheduler_features(steps: Tensor, inv_scales: Tensor, mean_square: Tensor, first_square: Tensor) -> Tensor:
    """The scheduler's inputs ``(S + 1,)`` from per-tensor quantities.

    Args:
        steps: ``(T,)`` step count of each tensor (1 at its first step).
        inv_scales: ``(S, 1)`` 1 / each time scale.
        mean_square: ``(T,)`` mean squared gradient of each tensor at this step.
        first_square: ``(T,)`` the same at each tensor's first step.
    """
    progress = torch.tanh(steps * inv_scales).mean(dim=1)  # (S,)
    ratio = 0.5 * torch.log((mean_square + _TINY) / (first_square + _TINY)).mean()
    return torch.cat([progress, ratio.reshape(1)])


def scheduler_features_by_model(
    steps: Tensor, inv_scales: Tensor, mean_square: Tensor, first_square: Tensor, models: Tensor, count: int
) -> Tensor:
    """:func:`scheduler_features` of each of ``count`` models at once, ``(count, S + 1)``.

    The tensors of several models are concatenated (a stacked meta-batch); ``models`` ``(T,)`` gives each tensor's
    model, ``0 .. count - 1``. Row ``k`` is :func:`scheduler_features` of model ``k``'s tensors alone (to rounding:
    its means are products with an averaging matrix).
    """
    onehot = torch.nn.functional.one_hot(models, count).t().to(mean_square.dtype)  # (M, T)
    average = onehot / onehot.sum(dim=1, keepdim=True)
    progress = torch.tanh(steps * inv_scales) @ average.t()  # (S, M)
    ratio = average @ (0.5 * torch.log((mean_square + _TINY) / (first_square + _TINY)))  # (M,)
    return torch.cat([progress.t(), ratio[:, None]], dim=1)


class GlobalScheduler(nn.Module):
    """``2 sigmoid(net(features))``: a per-step multiplier in (0, 2), exactly 1 before training.

    Args:
        num_features: inputs (``len(time_scales) + 1``).
        hidden_size: units of the hidden layer.
    """

    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor

    def __init__(self, num_features: int, hidden_size: int):
        super().__init__()
        first = torch.randn(hidden_size, num_features) * math.sqrt(2.0 / num_features)
        self.w1 = nn.Parameter(first)
        self.b1 = nn.Parameter(torch.zeros(hidden_size))
        self.w2 = nn.Parameter(torch.zeros(1, hidden_size))  # starts at "multiply by 1"
        self.b2 = nn.Parameter(torch.zeros(1))

    def forward(self, features: Tensor) -> Tensor:
        """The multiplier, a 0-d tensor, for ``features: (F,)``; one per row, ``(M,)``, for ``features: (M, F)``."""
        if features.dim() == 2:
            hidden = torch.relu(torch.addmm(self.b1, features, self.w1.t()))
            return 2.0 * torch.sigmoid(torch.addmm(self.b2, hidden, self.w2.t())).squeeze(1)
        hidden = torch.relu(torch.addmv(self.b1, self.w1, features))
        return 2.0 * torch.sigmoid(torch.addmv(self.b2, self.w2, hidden)).squeeze(0)
