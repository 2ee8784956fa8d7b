"""``geodesics plot RUN``: the Appendix D figures of a string: PCA views, snapshots over rounds, loss along the path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from envs.task.registry import task_from_spec
from envs.tooling.config import RunOptions
from geodesics.path import BeadString
from geodesics.plots import plot_path_loss, plot_snapshots, plot_string_pca
from geodesics.space import ParamSpace

__all__ = ["PlotConfig", "find_string", "run_plot"]


@dataclass
class PlotConfig(RunOptions):
    """Configuration of ``geodesics plot``."""

    run: str = ""
    """A run directory of ``geodesics connect``/``sweep``/``disconnection``, or a ``string.pt`` file."""
    device: str = "cpu"
    """Where the string's losses are re-evaluated for the figures: auto (CUDA when available), cpu or cuda."""
    dtype: str = "float32"
    """float32 or float64: the dtype the string's task is rebuilt in (its beads are cast to it) for the figures."""
    name: str = "plot"
    """Unused: plot writes no run directory of its own, only figures into the run's ``plots/`` folder (or ``out``)."""
    out: str | None = None
    """Folder of the figures; default the ``plots/`` folder of the run (or of the ``string.pt`` file's folder)."""
    string: str | None = None
    """For runs holding several strings: which one (a path inside the run); default the longest string at the run's
    lowest threshold."""
    panels: int = 4
    """Snapshots in the grid over rounds."""
    points: int = 24
    """Interpolated points per segment in the figures."""


def find_string(run: Path, choice: str | None) -> Path:
    """The string file a plot is about (see :class:`PlotConfig`)."""
    if run.is_file():
        return run
    if choice:
        return run / choice
    if (run / "string.pt").is_file():
        return run / "string.pt"
    candidates = sorted(run.glob("strings/*.pt"))
    if not candidates:
        raise ValueError(f"{run} holds no string (string.pt or strings/*.pt); pass a geodesics run directory")
    strings = {path: BeadString.load(path) for path in candidates}
    lowest = min(s.threshold for s in strings.values())
    at_lowest = [p for p, s in strings.items() if s.threshold == lowest]
    return max(at_lowest, key=lambda p: (strings[p].connected, strings[p].normalized_length))


def run_plot(cfg: PlotConfig) -> list[Path]:
    """Write the figures; returns their paths."""
    if not cfg.run:
        raise ValueError("give the run to plot: geodesics plot runs/<run-directory>")
    run = Path(cfg.run)
    if not run.exists():
        raise ValueError(f"{run} does not exist; pass a run directory a geodesics command printed")
    path = find_string(run, cfg.string)
    string = BeadString.load(path)
    space = ParamSpace.from_task(task_from_spec(string.task, device=cfg.device, dtype=cfg.dtype))
    folder = Path(cfg.out) if cfg.out else (run if run.is_dir() else run.parent) / "plots"
    stem = "" if path.name == "string.pt" else path.stem + "-"
    written = plot_string_pca(space, string, folder, cfg.points)
    written = [p.rename(p.with_name(stem + p.name)) for p in written]
    if any(r.beads is not None for r in string.history):
        written.append(plot_snapshots(space, string, folder / f"{stem}snapshots.png", cfg.panels, cfg.points))
    written.append(plot_path_loss(space, string, folder / f"{stem}path_loss.png"))
    print(f"string: {path}")
    for figure in written:
        print(f"figure: {figure}")
    return written
