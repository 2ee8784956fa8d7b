"""``geodesics disconnection``: the DSS paper's sanity check (Appendix E), with a control that does connect.

A ``permutation`` model (2-3-2 ReLU, no biases) is trained below L0; its copy with two hidden units swapped computes
the same function, so it has the same loss, yet by the paper's argument no path inside the level set joins the two.
DSS must therefore end with ``connected=False`` and a reason. The control connects two independently trained models of
a task whose level sets are connected at that level (``poly_cubic`` by default), with the same DSS settings, to show
that the failure is the landscape's and not the engine's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from envs.tasks.permutation import swap_hidden_units
from envs.tooling.config import RunOptions, TaskConfig, check_range
from envs.tooling.runs import Run
from geodesics.alignment import align, check_alignment
from geodesics.commands.connect import ConnectConfig, connect_endpoints
from geodesics.commands.preamble import command_space
from geodesics.commands.report import record_string, string_report
from geodesics.endpoints import EndpointConfig, make_endpoint
from geodesics.finders import DSSConfig, connect
from geodesics.path import BeadString
from geodesics.plots import plot_snapshots
from geodesics.space import ParamSpace

__all__ = ["DisconnectionConfig", "permuted_pair", "run_disconnection"]


def _control() -> ConnectConfig:
    return ConnectConfig(task=TaskConfig(name="poly_cubic"), threshold=0.1, device="cpu")


@dataclass
class DisconnectionConfig(RunOptions):
    """Configuration of ``geodesics disconnection``."""

    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="permutation"))
    """The task of the permuted pair (a model whose hidden units can be swapped: ``permutation``)."""
    device: str = "cpu"
    """Where the permuted pair is trained and connected: auto (CUDA when available), cpu or cuda (the control has its
    own ``control.device`` and ``control.dtype``)."""
    name: str = "disconnection"
    """Prefix of the run directory name."""
    threshold: float = 0.01
    """L0 for the permuted pair."""
    model: EndpointConfig = field(default_factory=lambda: EndpointConfig(seed=1))
    """The trained model; its copy with ``swap`` exchanged is the other endpoint."""
    swap: list[int] = field(default_factory=lambda: [0, 1])
    """The two hidden units exchanged."""
    dss: DSSConfig = field(default_factory=lambda: DSSConfig(max_rounds=8))
    """DSS settings of the permuted pair."""
    control: ConnectConfig = field(default_factory=_control)
    """The control: two independently trained models of a task that connects."""
    align: str = "none"
    """Before connecting the permuted pair: ``none``, or ``weight_matching`` (the copy's hidden units permuted back
    to match the model: the symmetry the check is about, removed)."""

    def __post_init__(self) -> None:
        check_range(self, "threshold", low=0, low_open=True)
        check_alignment(self)


def permuted_pair(
    space: ParamSpace, model: EndpointConfig, threshold: float, swap: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A trained model's flat vector and the vector of its copy with two hidden units swapped."""
    if len(swap) != 2 or swap[0] == swap[1]:
        raise ValueError(f"swap must name two different hidden units, got {swap}")
    a = make_endpoint(space, model, threshold)
    b = space.flatten(swap_hidden_units(space.to_model(a), *swap))
    return a, b


def run_disconnection(cfg: DisconnectionConfig) -> dict[str, Any]:
    """Connect the permuted pair (on ``cfg.device``, in ``cfg.dtype``) and the control; returns their metrics."""
    space = command_space(cfg)
    control_space = command_space(cfg.control)  # the control's task and alignment too, before anything is written
    run = Run.create(cfg.name, cfg, cfg.out)
    run.announce(tensorboard=False)
    with run:
        a, b = permuted_pair(space, cfg.model, cfg.threshold, cfg.swap)
        losses = space.batched_eval_loss(torch.stack([a, b]))
        b = align(space, a, b, cfg.align)
        permuted = connect(space, a, b, cfg.threshold, cfg.dss)
        control_space, control = connect_endpoints(cfg.control, control_space)
        results: dict[str, Any] = {}
        for label, string, where in (("permuted", permuted, space), ("control", control, control_space)):
            results[label] = record_string(run, where, string, kind=label, path=run.subdir("strings") / f"{label}.pt",
                                           plot=run.subdir("plots") / f"{label}_path_loss.png",
                                           prefix=f"geodesic/{label}")  # fmt: skip
        plot_snapshots(space, permuted, run.subdir("plots") / "permuted_snapshots.png", panels=3)
        results["swap_loss_difference"] = abs(float(losses[0] - losses[1]))
        run.write_text("report.md", _report(cfg, permuted, control, results["swap_loss_difference"]))
    if cfg.align != "none":
        verdict = f"{'connected' if permuted.connected else 'NOT connected'} after {cfg.align}"
    else:
        verdict = "disconnected, as the paper predicts" if not permuted.connected else "CONNECTED (unexpected)"
    print(f"permuted pair: {verdict}; reason: {permuted.reason or '-'}")
    print(f"control ({control.task['name']}): {'connected' if control.connected else 'not connected'}, "
          f"normalized length {control.normalized_length:.3f}")  # fmt: skip
    print(f"report: {run.path / 'report.md'}")
    return results


def _report(cfg: DisconnectionConfig, permuted: BeadString, control: BeadString, difference: float) -> str:
    return (
        "# Disconnection check (DSS paper, Appendix E)\n\n"
        f"A `{cfg.task.name}` model trained below L0 = {cfg.threshold:g} and its copy with hidden units {cfg.swap} "
        f"swapped (same function: their losses differ by {difference:.3g})"
        + (f", the copy then aligned to the model by `{cfg.align}`" if cfg.align != "none" else "")
        + f". Path finder `{permuted.method}` on this pair: "
        f"**{'connected' if permuted.connected else 'not connected'}**"
        + (f" ({permuted.reason})" if permuted.reason else "")
        + f". Control: two independently trained `{control.task['name']}` models at L0 = {control.threshold:g}: "
        f"**{'connected' if control.connected else 'not connected'}**.\n\n"
        "![snapshots of the permuted pair's string](plots/permuted_snapshots.png)\n\n"
        "## Permuted pair\n\n"
        + string_report(cfg.task.name, permuted, "plots/permuted_path_loss.png").split("\n", 2)[2]
        + "\n## Control\n\n"
        + string_report(control.task["name"], control, "plots/control_path_loss.png").split("\n", 2)[2]
    )
