"""The written outputs of a comparison: ``report.md``, the CSVs, one PNG per task and the TensorBoard runs.

Everything is written from the results alone (:mod:`metaopt.compare.results`), so a resumed run and an uninterrupted
one write the same files.
"""

from __future__ import annotations

from envs.tooling.config import to_yaml
from envs.tooling.plots import save_figure
from envs.tooling.runs import Run
from metaopt.compare.config import CompareConfig
from metaopt.compare.figures import plot_task, write_tensorboard
from metaopt.compare.report import csv_text, curve_rows, render_report, result_rows, tuning_rows
from metaopt.compare.results import TaskResult

__all__ = ["write_outputs"]


def write_outputs(run: Run, cfg: CompareConfig, tasks: list[TaskResult]) -> None:
    """``report.md``, ``results.csv``, ``tuning.csv``, ``curves.csv``, ``plots/<task>.png`` and ``tb/``."""
    report = render_report(cfg, tasks)
    run.write_text("results.csv", csv_text(result_rows(cfg, tasks)))
    run.write_text("tuning.csv", csv_text(tuning_rows(tasks, cfg.tune_on)))
    run.write_text("curves.csv", csv_text(curve_rows(tasks)))
    plots = run.subdir("plots")
    for task in tasks:
        save_figure(plot_task(task, cfg.reference, cfg.tune_on), plots / f"{task.label}.png")
    write_tensorboard(run.path / "tb", tasks, to_yaml(cfg), report, cfg.reference)
    run.write_text("report.md", report)
