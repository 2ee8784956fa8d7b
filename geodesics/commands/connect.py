"""``geodesics connect``: train or load two endpoints, connect them with a path finder, write the run directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envs.tooling.config import RunOptions, TaskConfig, check_range
from envs.tooling.runs import Run
from geodesics.alignment import align, check_alignment
from geodesics.commands.preamble import command_space, progress_lines
from geodesics.commands.report import record_string, string_report
from geodesics.endpoints import EndpointConfig, make_endpoint
from geodesics.finders import DSSConfig, connect
from geodesics.finders.base import list_finders, takes_profiles
from geodesics.levels import LevelProfile, Linear
from geodesics.path import BeadString
from geodesics.space import ParamSpace, check_strategy

__all__ = ["ConnectConfig", "connect_endpoints", "run_connect"]


@dataclass
class ConnectConfig(RunOptions):
    """Configuration of ``geodesics connect``."""

    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="poly_cubic"))
    """The task whose level set is explored."""
    name: str = "connect"
    """Prefix of the run directory name."""
    threshold: float = 0.05
    """L0: the endpoints are trained below it and the path must stay under it (evaluation loss)."""
    threshold_end: float = 0.0
    """The level at B of a linear level profile from ``threshold`` at A (the path at arc-length fraction s stays
    under threshold + s (threshold_end - threshold); B is trained below threshold_end; greedy and constrained DSS
    only). 0: the constant level ``threshold``."""
    a: EndpointConfig = field(default_factory=lambda: EndpointConfig(seed=0))
    """First endpoint."""
    b: EndpointConfig = field(default_factory=lambda: EndpointConfig(seed=1))
    """Second endpoint."""
    dss: DSSConfig = field(default_factory=DSSConfig)
    """Path finder (``dss.finder``: name and options), shared budgets and checks."""
    align: str = "none"
    """Before the path finder: ``none``, or ``weight_matching`` (B's hidden units permuted to match A's, the same
    function; the path then ends at the aligned B)."""
    strategy: str = "auto"
    """How a stack of models is evaluated (``geodesics.ParamSpace``): ``auto`` (``loop`` on CPU, ``vmap`` on CUDA),
    ``loop`` (exact: each model as if alone), ``vmap``, or ``bmm`` (MLP tasks only: explicit batched matmuls and a
    hand-written backward, several times faster than the loop on CPU; agrees with it to rounding)."""

    def __post_init__(self) -> None:
        check_range(self, "threshold", low=0, low_open=True)
        check_range(self, "threshold_end", low=0)
        if self.threshold_end > 0 and not takes_profiles(self.dss.finder.name):
            able = ", ".join(name for name in list_finders() if takes_profiles(name))
            raise ValueError(
                f"threshold_end (a level profile) needs dss.finder.name {able}, got {self.dss.finder.name}"
            )
        check_alignment(self)
        check_strategy(self)

    @property
    def level(self) -> float | LevelProfile:
        """The level the path must stay under: ``threshold``, or the profile to ``threshold_end``."""
        return Linear(self.threshold, self.threshold_end) if self.threshold_end > 0 else self.threshold


def connect_endpoints(cfg: ConnectConfig, space: ParamSpace | None = None) -> tuple[ParamSpace, BeadString]:
    """Make the endpoints, align B, connect (no files written), in ``space`` (default: built from ``cfg``)."""
    space = command_space(cfg) if space is None else space
    a = make_endpoint(space, cfg.a, cfg.threshold)
    b = align(space, a, make_endpoint(space, cfg.b, cfg.threshold_end or cfg.threshold), cfg.align)
    return space, connect(space, a, b, cfg.level, cfg.dss)


def run_connect(cfg: ConnectConfig) -> dict[str, Any]:
    """Connect two endpoints of ``cfg.task``; returns the string's metrics."""
    space = command_space(cfg)  # a bad task, missing data, a strategy or alignment the model cannot take: exit 2 now
    run = Run.create(f"{cfg.name}-{cfg.task.name}", cfg, cfg.out)
    run.announce()
    with run:
        with progress_lines("connect"):
            space, string = connect_endpoints(cfg, space)
        plot = run.subdir("plots") / "path_loss.png"
        metrics = record_string(run, space, string, kind="connect", path=run.path / "string.pt", plot=plot)
        run.log_scalars("geodesic", {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}, 0)
        run.write_text("report.md", string_report(space.task.name, string))
    state = "connected" if string.connected else f"NOT connected: {string.reason}"
    level = f"L0 = {cfg.threshold:g}"
    if cfg.threshold_end:
        level = f"L(s) from {cfg.threshold:g} to {cfg.threshold_end:g}"
    print(f"{state}; {string.num_beads} beads, normalized length {string.normalized_length:.4f}, "
          f"max loss {string.max_loss:.5g} ({level})")  # fmt: skip
    print(f"string: {run.path / 'string.pt'}\nplot: {plot}")
    return metrics
