"""Figures of strings and sweeps, computed with the engine, one PNG (Agg backend) per function.

The loss along a string (or along several paths between the same endpoints); its principal-component views
(Appendix D); snapshots over rounds (Figures 3 and 4); the threshold sweep (Figure 1). Figures come from
``envs.tooling.plots`` (one style, atomic PNG writes); matplotlib is imported on first use, as there, so the command
line starts without it.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from envs.tooling.plots import save_figure, subplots
from geodesics.curve import evaluate_segments
from geodesics.path import BeadString
from geodesics.space import ParamSpace

__all__ = [
    "path_loss",
    "pca_axes",
    "plot_path_loss",
    "plot_paths_loss",
    "plot_snapshots",
    "plot_string_pca",
    "plot_sweep",
]


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
    s, losses, bead_s = path_loss(space, string, points_per_segment)
    fig, ax = subplots(figsize=(7, 4))
    ax.plot(s.numpy(), losses.numpy(), color="tab:blue", lw=1.5, label="loss along the string")
    ax.plot(bead_s.numpy(), string.bead_losses.cpu().numpy(), "o", color="tab:blue", ms=4, label="beads")
    ax.axhline(string.threshold, color="tab:red", ls="--", lw=1, label=f"threshold L0 = {string.threshold:.4g}")
    alpha = string.config.get("alpha")
    if alpha:
        ax.axhline(
            alpha * string.threshold, color="tab:red", ls=":", lw=1, label=f"bead target alpha*L0 (alpha={alpha})"
        )
    ax.set_title(_title(string), fontsize=9)
    ax.set_xlabel("arc length along the string (fraction)")
    ax.set_ylabel("evaluation loss")
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def plot_paths_loss(space: ParamSpace, strings: Mapping[str, BeadString], path: str | Path, title: str = "") -> Path:
    """Save a PNG of the loss along several paths between the same endpoints (one line per label), with L0."""
    fig, ax = subplots(figsize=(7.5, 4.2))
    for label, string in strings.items():
        s, losses, _ = path_loss(space, string)
        state = "" if string.connected else f", not connected ({string.failure})"
        ax.plot(s.numpy(), losses.numpy(), lw=1.4, label=f"{label}: length {string.normalized_length:.3f}{state}")
    if strings:
        threshold = next(iter(strings.values())).threshold
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold L0 = {threshold:.4g}")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("arc length along the path (fraction)")
    ax.set_ylabel("evaluation loss")
    ax.legend(loc="best", fontsize=7)
    return save_figure(fig, path)


def plot_sweep(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """The paper's Figure 1 for one task: normalized length and beads against L0 (log x), mean ± standard error."""
    rows = sorted(rows, key=lambda r: r["threshold"])
    x = [r["threshold"] for r in rows]
    fig, axes = subplots(1, 2, figsize=(10, 3.8))
    panels = [("normalized_length", "normalized geodesic length"), ("num_beads", "number of beads")]
    for ax, (key, label) in zip(axes, panels):
        mean = [r[f"{key}_mean"] for r in rows]
        se = [0.0 if r[f"{key}_se"] != r[f"{key}_se"] else r[f"{key}_se"] for r in rows]  # NaN (one pair) -> no bar
        ax.errorbar(x, mean, yerr=se, fmt="o-", color="tab:blue", capsize=3, ms=4)
        ax.set_xscale("log")
        ax.set_xlabel("threshold L0 (evaluation loss)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    for r in rows:
        if r["trained"] and r["connected"] < r["trained"]:
            axes[0].annotate(f"{r['connected']}/{r['trained']}", (r["threshold"], r["normalized_length_mean"]),
                             fontsize=7, color="tab:red", textcoords="offset points", xytext=(0, 6))  # fmt: skip
    fig.suptitle(f"{title}: level-set geometry against the loss level (mean ± s.e. over connected pairs)")
    return save_figure(fig, path)


def pca_axes(beads: Tensor, k: int = 3) -> tuple[Tensor, Tensor]:
    """``(centre (P,), axes (k, P))``: the principal axes of a set of beads (Appendix D), in float64."""
    x = beads.double().cpu()
    centre = x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x - centre, full_matrices=False)
    axes = vh[:k]
    if axes.shape[0] < k:  # fewer beads than axes: pad with zeros so projections stay 3-D
        axes = torch.cat([axes, torch.zeros(k - axes.shape[0], x.shape[1], dtype=x.dtype)])
    return centre, axes


def _projected_path(
    space: ParamSpace, beads: Tensor, centre: Tensor, axes: Tensor, points: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Projected coordinates of the interpolated points of a string, their losses, and the projected beads."""
    beads = space.check(beads, batched=True)
    ts = torch.linspace(0.0, 1.0, points, dtype=torch.float64, device=space.device)
    losses = evaluate_segments(space, beads[:-1], beads[1:], ts.expand(len(beads) - 1, -1)).cpu().reshape(-1)
    dense = (
        torch.lerp(beads[:-1, None].double(), beads[1:, None].double(), ts[None, :, None])
        .cpu()
        .reshape(-1, beads.shape[1])
    )
    return (dense - centre) @ axes.T, losses, (beads.double().cpu() - centre) @ axes.T


def _coloured_line(ax: Any, coords: Tensor, losses: Tensor, norm: Any, three_d: bool = False) -> Any:
    from matplotlib.collections import LineCollection
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    pts = coords.numpy()
    segments = [pts[i : i + 2] for i in range(len(pts) - 1)]
    cls = Line3DCollection if three_d else LineCollection
    line = cls(segments, cmap="coolwarm", norm=norm, linewidths=2)
    line.set_array(losses.numpy()[:-1])
    ax.add_collection(line)
    return line


def plot_string_pca(space: ParamSpace, string: BeadString, folder: str | Path, points: int = 24) -> list[Path]:
    """Appendix D: the string on its top principal components, 2-D and 3-D, coloured by loss on a log scale."""
    from matplotlib.colors import LogNorm

    centre, axes = pca_axes(string.beads)
    coords, losses, bead_xy = _projected_path(space, string.beads, centre, axes, points)
    norm = LogNorm(vmin=max(float(losses.min()), 1e-12), vmax=max(float(losses.max()), float(losses.min()) * 1.01))
    title = _title(string)
    fig, ax = subplots(figsize=(6, 5))
    line = _coloured_line(ax, coords[:, :2], losses, norm)
    ax.plot(bead_xy[:, 0].numpy(), bead_xy[:, 1].numpy(), "k.", ms=5)
    ax.autoscale()
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize=9)
    fig.colorbar(line, ax=ax, label="evaluation loss (log scale)")
    out = [save_figure(fig, Path(folder) / "pca2d.png")]
    fig, ax3 = subplots(figsize=(6.5, 5.5), projection="3d")
    line = _coloured_line(ax3, coords, losses, norm, three_d=True)
    ax3.scatter(*bead_xy.T.numpy(), color="k", s=8)
    for dim, lim in enumerate((ax3.set_xlim, ax3.set_ylim, ax3.set_zlim)):
        lo, hi = float(coords[:, dim].min()), float(coords[:, dim].max())
        pad = 0.05 * (hi - lo) or 1e-6
        lim(lo - pad, hi + pad)
    ax3.set_xlabel("PC 1")
    ax3.set_ylabel("PC 2")
    ax3.set_zlabel("PC 3", labelpad=8)
    ax3.set_title(title, fontsize=9)
    fig.colorbar(line, ax=ax3, label="evaluation loss (log scale)", shrink=0.7)
    out.append(save_figure(fig, Path(folder) / "pca3d.png"))
    return out


def plot_snapshots(space: ParamSpace, string: BeadString, path: str | Path, panels: int = 4, points: int = 24) -> Path:
    """Figure 3 / Figure 4: snapshots of the string over rounds on the final string's principal axes."""
    from matplotlib.colors import LogNorm

    snapshots = [r for r in string.history if r.beads is not None]
    if not snapshots:
        raise ValueError("this string kept no snapshots (run DSS with dss.keep_snapshots=true)")
    count = min(panels, len(snapshots))
    picks = sorted({int(i * (len(snapshots) - 1) / max(1, count - 1) + 0.5) for i in range(count)})
    chosen = [snapshots[i] for i in picks]
    centre, axes = pca_axes(string.beads)
    paths = [_projected_path(space, typing.cast(Tensor, r.beads), centre, axes, points) for r in chosen]
    low = min(float(p[1].min()) for p in paths)
    high = max(float(p[1].max()) for p in paths)
    norm = LogNorm(vmin=max(low, 1e-12), vmax=max(high, low * 1.01))
    fig, axs = subplots(1, len(chosen), figsize=(4 * len(chosen), 3.8), squeeze=False, sharex=True, sharey=True)
    for ax, record, (coords, losses, bead_xy) in zip(axs[0], chosen, paths):
        line = _coloured_line(ax, coords[:, :2], losses, norm)
        ax.plot(bead_xy[:, 0].numpy(), bead_xy[:, 1].numpy(), "k.", ms=4)
        ax.autoscale()
        ax.set_title(
            f"round {record.round}: {record.num_beads} beads, worst {record.worst_segment_max:.3g}", fontsize=8
        )
        ax.set_xlabel("PC 1")
    axs[0][0].set_ylabel("PC 2")
    fig.colorbar(line, ax=list(axs[0]), label="evaluation loss (log scale)")
    fig.suptitle(_title(string), fontsize=9)
    return save_figure(fig, path)


def _title(string: BeadString) -> str:
    status = "connected" if string.connected else f"not connected ({string.failure})"
    return (
        f"{string.task.get('name', '')}, L0 = {string.threshold:.4g}: {status}, {string.num_beads} beads, "
        f"normalized length {string.normalized_length:.3f}"
    )
