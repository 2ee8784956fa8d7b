"""Gradient preprocessing: what one coordinate's gradient looks like to the coordinatewise LSTM.

Andrychowicz et al. 2016, Appendix A: gradients span many orders of magnitude, so the paper feeds the LSTM the pair

    (log|g| / p, sign g)   if |g| >= e^-p
    (-1,         e^p g)    otherwise

with p = 10 (``log_sign``). The alternative the paper mentions, a plain rescaling ``g * scale``, is ``scaled``. Pure
functions on flat tensors: ``grads: (N,) -> features: (N, F)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["FEATURE_MODES", "log_sign", "num_features", "preprocess", "scaled"]

FEATURE_MODES = ("log_sign", "scaled")
"""Valid values of ``mode`` in :func:`preprocess`."""


def log_sign(grads: Tensor, p: float = 10.0) -> Tensor:
    """The L2L log-magnitude and sign features.

    Args:
        grads: ``(N,)`` gradient coordinates.
        p: magnitude cut-off exponent; gradients below ``e^-p`` in magnitude are passed linearly.

    Returns:
        ``(N, 2)`` features.
    """
    cutoff = math.exp(-p)
    magnitude = grads.abs()
    large = magnitude >= cutoff
    # clamp before the log so the unused branch of ``where`` never sees log(0): its gradient would be NaN
    log_part = torch.where(large, magnitude.clamp_min(cutoff).log() / p, torch.full_like(grads, -1.0))
    sign_part = torch.where(large, torch.sign(grads), grads * math.exp(p))
    return torch.stack((log_part, sign_part), dim=-1)


def scaled(grads: Tensor, scale: float = 1.0) -> Tensor:
    """Plain scaling: ``(N,) -> (N, 1)`` features ``g * scale``."""
    return (grads * scale).unsqueeze(-1)


def num_features(mode: str) -> int:
    """Features per coordinate produced by ``mode``."""
    if mode not in FEATURE_MODES:
        raise ValueError(f"unknown feature mode {mode!r}; valid: {', '.join(FEATURE_MODES)}")
    return 2 if mode == "log_sign" else 1


def preprocess(grads: Tensor, mode: str = "log_sign", *, p: float = 10.0, scale: float = 1.0) -> Tensor:
    """Features of ``grads: (N,)`` for the LSTM: ``(N, num_features(mode))``.

    Args:
        grads: flat gradient coordinates.
        mode: ``"log_sign"`` (the L2L preprocessing) or ``"scaled"``.
        p: the cut-off exponent of ``log_sign``.
        scale: the factor of ``scaled``.
    """
    num_features(mode)  # validates
    return log_sign(grads, p) if mode == "log_sign" else scaled(grads, scale)
