"""What the geodesics commands write about a string: its file, TensorBoard scalars, record, figure and report."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from envs.tooling.runs import Run
from geodesics.path import BeadString
from geodesics.plots import plot_path_loss
from geodesics.space import ParamSpace

__all__ = ["csv_text", "log_string", "record_string", "string_report"]


def csv_text(rows: list[dict[str, Any]]) -> str:
    """CSV of ``rows`` (dicts with the same keys, in order), a header line first."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


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


def record_string(
    run: Run, space: ParamSpace, string: BeadString, *, kind: str, path: Path, plot: Path, prefix: str = "geodesic"
) -> dict[str, Any]:
    """Save the string at ``path``, log its rounds, plot the loss along it at ``plot`` and append its record.

    Returns:
        The string's metrics (what the record holds besides ``kind`` and ``task``).
    """
    string.save(path)
    log_string(run, string, prefix)
    plot_path_loss(space, string, plot)
    metrics = string.metrics()
    run.append_record({"kind": kind, "task": string.task["name"], **metrics})
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
