"""``geodesics connect``: train or load two endpoints, connect them with DSS, write the run directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envs.registry import make_task
from envs.tooling.config import RunOptions, TaskConfig
from envs.tooling.runs import Run
from geodesics.dss import DSSConfig, connect
from geodesics.endpoints import EndpointConfig, make_endpoint
from geodesics.plots import plot_path_loss
from geodesics.space import ParamSpace
from geodesics.string import BeadString

__all__ = ["ConnectConfig", "connect_endpoints", "log_string", "run_connect"]


@dataclass
class ConnectConfig(RunOptions):
    """Configuration of ``geodesics connect``."""

    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="poly_cubic"))
    """The task whose level set is explored."""
    name: str = "connect"
    """Prefix of the run directory name."""
    threshold: float = 0.05
    """L0: the endpoints are trained below it and the path must stay under it (evaluation loss)."""
    a: EndpointConfig = field(default_factory=lambda: EndpointConfig(seed=0))
    """First endpoint."""
    b: EndpointConfig = field(default_factory=lambda: EndpointConfig(seed=1))
    """Second endpoint."""
    dss: DSSConfig = field(default_factory=DSSConfig)
    """DSS settings."""


def log_string(run: Run, string: BeadString, prefix: str = "geodesic") -> None:
    """Per-round ``geodesic/`` scalars of a string in the run's TensorBoard."""
    for record in string.history:
        run.log_scalars(
            prefix,
            {
                "num_beads": record.num_beads,
                "failing_segments": record.failing_segments,
                "worst_segment_max": record.worst_segment_max,
                "seconds": record.seconds,
            },
            record.round,
        )


def connect_endpoints(cfg: ConnectConfig) -> tuple[ParamSpace, BeadString]:
    """Build the task, make both endpoints and connect them (no files written)."""
    task = make_task(cfg.task.name, device=cfg.device, dtype=cfg.dtype, **cfg.task.options)
    space = ParamSpace.from_task(task)
    a = make_endpoint(space, task, cfg.a, cfg.threshold)
    b = make_endpoint(space, task, cfg.b, cfg.threshold)
    return space, connect(space, a, b, cfg.threshold, cfg.dss)


def run_connect(cfg: ConnectConfig) -> dict[str, Any]:
    """Connect two endpoints of ``cfg.task``; returns the string's metrics."""
    make_task(cfg.task.name, **cfg.task.options).load()  # fail on a bad task or missing data before writing anything
    run = Run.create(f"{cfg.name}-{cfg.task.name}", cfg, cfg.out)
    print(f"run directory: {run.path}")
    with run:
        space, string = connect_endpoints(cfg)
        task = space.task
        string.save(run.path / "string.pt")
        log_string(run, string)
        metrics = string.metrics()
        run.log_scalars("geodesic", {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}, 0)
        run.append_record({"kind": "connect", "task": task.name, **metrics})
        plot = plot_path_loss(space, string, run.subdir("plots") / "path_loss.png")
        run.write_text("report.md", string_report(task.name, string))
    state = "connected" if string.connected else f"NOT connected: {string.reason}"
    print(f"{state}; {string.num_beads} beads, normalized length {string.normalized_length:.4f}, "
          f"max loss {string.max_loss:.5g} (L0 = {cfg.threshold:g})")  # fmt: skip
    print(f"string: {run.path / 'string.pt'}\nplot: {plot}\ntensorboard --logdir {run.path / 'tb'}")
    return metrics


def string_report(task_name: str, string: BeadString, plot: str = "plots/path_loss.png") -> str:
    """Markdown: the string's metrics and its per-round table."""
    rows = "\n".join(
        f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in string.metrics().items()
    )
    rounds = "\n".join(
        f"| {r.round} | {r.num_beads} | {r.new_beads} | {r.failing_segments} | {r.worst_segment_max:.5g} | "
        f"{r.train_steps} | {r.seconds:.2f} |"
        for r in string.history
    )
    return (
        f"# geodesics connect: {task_name}\n\n| metric | value |\n|---|---|\n{rows}\n\n"
        "## Rounds\n\n| round | beads | new | failing segments | worst segment max | train steps | seconds |\n"
        f"|---|---|---|---|---|---|---|\n{rounds}\n\n![loss along the path]({plot})\n"
    )
