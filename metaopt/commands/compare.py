"""``metaopt compare``: tuned baselines on paired seeds, written as a report, CSVs, plots and TensorBoard runs.

The thin shell over the harness: validate, open (or reopen) the run directory, compute what is missing
(:func:`metaopt.compare.compute_results`), then write every output from the records alone
(:func:`metaopt.compare.write_outputs`) and print the tables. Under ``torchrun`` the ranks share the units and rank 0
writes the outputs.
"""

from __future__ import annotations

from typing import Any

from envs.tooling import distributed
from metaopt.compare import CompareConfig, compute_results, write_outputs
from metaopt.compare.report import result_rows, results_table, short_lines

__all__ = ["run_compare"]


def run_compare(cfg: CompareConfig, *, progress: bool = True, tables: bool = True) -> dict[str, Any]:
    """Run (or resume) a comparison and write its outputs; the ``metaopt compare`` command.

    Args:
        cfg: The comparison.
        progress: Show progress bars.
        tables: Print every task's full table; False prints one line per optimizer (the tables are in the report).

    Returns:
        ``{"run_dir": path, "results": rows, "tasks": results}``: the rows of ``results.csv`` and the
        :class:`~metaopt.compare.TaskResult` of every task (what the report is rendered from).
    """
    run, tasks = compute_results(cfg, progress=progress)
    if not distributed.is_main():
        return {"run_dir": str(run.path), "results": result_rows(cfg, tasks), "tasks": tasks}
    write_outputs(run, cfg, tasks)
    for task in tasks:
        if tables:
            print(f"\n{task.label} ({'held out' if task.config.held_out else 'in distribution'}):")
            print(results_table(task, cfg))
        else:
            print("\n".join(short_lines(task, cfg)))
    print(f"\nreport: {run.path / 'report.md'}")
    return {"run_dir": str(run.path), "results": result_rows(cfg, tasks), "tasks": tasks}
