"""``metaopt compare``: tuned baselines on paired seeds, written as a report, CSVs, plots and TensorBoard runs.

The thin shell over the harness: validate, open (or reopen) the run directory, compute what is missing, then write
every output from the records alone.
"""

from __future__ import annotations

from typing import Any

import torch

from envs.tooling.config import to_yaml
from envs.tooling.plots import save_figure
from envs.tooling.runs import Run
from metaopt.compare.config import CompareConfig
from metaopt.compare.figures import plot_task, write_tensorboard
from metaopt.compare.harness import make_plan, sweep
from metaopt.compare.report import csv_text, curve_rows, render_report, result_rows, results_table, tuning_rows
from metaopt.compare.results import Records, TaskResult, task_results

__all__ = ["compute_results", "run_compare", "write_outputs"]


def run_compare(cfg: CompareConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a comparison and write its outputs; the ``metaopt compare`` command.

    Returns:
        ``{"run_dir": path, "results": rows}`` with the rows of ``results.csv``.
    """
    run, tasks = compute_results(cfg, progress=progress)
    write_outputs(run, cfg, tasks)
    for task in tasks:
        print(f"\n{task.label} ({'held out' if task.config.held_out else 'in distribution'}):")
        print(results_table(task, cfg))
    print(f"\nreport: {run.path / 'report.md'}\ntensorboard --logdir {run.path / 'tb'}")
    return {"run_dir": str(run.path), "results": result_rows(cfg, tasks)}


def compute_results(cfg: CompareConfig, *, progress: bool = True) -> tuple[Run, list[TaskResult]]:
    """Validate, open (or reopen) the run directory, compute the missing units, and read the results back."""
    plan = make_plan(cfg)  # every check before the run directory exists
    run = Run.create(cfg.name, cfg, cfg.out)
    print(f"run directory: {run.path}")
    threads = torch.get_num_threads()
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        sweep(plan, run, progress=progress)
    finally:
        torch.set_num_threads(threads)
    records = Records(run.records())  # the results depend on the file alone, as they do after a resume
    return run, [task_results(cfg, label, records, plan.paths, plan.tunable) for label in cfg.tasks]


def write_outputs(run: Run, cfg: CompareConfig, tasks: list[TaskResult]) -> None:
    """``report.md``, ``results.csv``, ``tuning.csv``, ``curves.csv``, ``plots/<task>.png`` and ``tb/``."""
    report = render_report(cfg, tasks)
    run.write_text("results.csv", csv_text(result_rows(cfg, tasks)))
    run.write_text("tuning.csv", csv_text(tuning_rows(tasks)))
    run.write_text("curves.csv", csv_text(curve_rows(tasks)))
    plots = run.subdir("plots")
    for task in tasks:
        save_figure(plot_task(task, cfg.reference), plots / f"{task.label}.png")
    write_tensorboard(run.path / "tb", tasks, to_yaml(cfg), report)
    run.write_text("report.md", report)
