"""Figures of a string: the loss along the final path (with the threshold drawn)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from geodesics.curve import evaluate_segments
from geodesics.space import ParamSpace
from geodesics.string import BeadString

__all__ = ["path_loss", "plot_path_loss"]


def path_loss(space: ParamSpace, string: BeadString, points_per_segment: int = 32) -> tuple[Tensor, Tensor, Tensor]:
    """The evaluation loss along the whole string.

    Returns:
        ``(s, losses, bead_s)``: arc-length fractions of the evaluated points, their losses, and the arc-length
        fractions of the beads.
    """
    beads = space.check(string.beads, batched=True)
    lengths = string.segment_lengths.cpu()
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), lengths.cumsum(0)])
    total = float(cumulative[-1]) or 1.0
    ts = torch.linspace(0.0, 1.0, points_per_segment, dtype=torch.float64, device=space.device)
    losses = evaluate_segments(space, beads[:-1], beads[1:], ts.expand(len(lengths), -1)).cpu()
    s = (cumulative[:-1, None] + lengths[:, None] * ts.cpu()[None, :]) / total
    return s.reshape(-1), losses.reshape(-1), cumulative / total


def plot_path_loss(space: ParamSpace, string: BeadString, path: str | Path, points_per_segment: int = 32) -> Path:
    """Save a PNG of the loss along the string against arc length, with L0 and the beads marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, losses, bead_s = path_loss(space, string, points_per_segment)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(s.numpy(), losses.numpy(), color="tab:blue", lw=1.5, label="loss along the string")
    ax.plot(bead_s.numpy(), string.bead_losses.cpu().numpy(), "o", color="tab:blue", ms=4, label="beads")
    ax.axhline(string.threshold, color="tab:red", ls="--", lw=1, label=f"threshold L0 = {string.threshold:.4g}")
    alpha = string.config.get("alpha")
    if alpha:
        ax.axhline(
            alpha * string.threshold, color="tab:red", ls=":", lw=1, label=f"bead target alpha*L0 (alpha={alpha})"
        )
    status = "connected" if string.connected else f"not connected ({string.reason.split(':')[0]})"
    ax.set_title(
        f"{string.task.get('name', '')}: {status}, {string.num_beads} beads, "
        f"normalized length {string.normalized_length:.3f}"
    )
    ax.set_xlabel("arc length along the string (fraction)")
    ax.set_ylabel("evaluation loss")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
