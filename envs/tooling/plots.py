"""Figures for every command: bare ``matplotlib`` figures (no pyplot state, no display), one style, atomic PNGs.

Commands draw with ``fig, ax = subplots(...)`` (the signature of ``pyplot.subplots``, plus ``projection="3d"``) and
finish with ``save_figure(fig, path)``: a crash while saving leaves the old PNG (or none), never a truncated one.
matplotlib is imported on first use, so the command line starts without it.
"""

from __future__ import annotations

import io
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envs.tooling.runs import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DPI", "STYLE", "save_figure", "subplots"]

DPI = 120
STYLE: dict[str, Any] = {
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
"""rcParams every figure's axes are made under (read when the axes are created)."""


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (7, 4), projection: str | None = None,
             **kwargs: Any) -> tuple[Figure, Any]:  # fmt: skip
    """A new figure in the house style and its axes (one ``Axes``, or an array as ``pyplot.subplots`` gives)."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(typing.cast(Any, STYLE)):
        fig = Figure(figsize=figsize, layout=kwargs.pop("layout", None))
        if projection is not None:
            return fig, fig.add_subplot(projection=projection)
        return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` atomically (folders made as needed); returns the path."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path
