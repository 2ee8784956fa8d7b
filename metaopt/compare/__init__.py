"""The comparison harness (DESIGN.md section 7): tuned baselines on paired seeds, batched runs, resumable records.

>>> from envs.tooling.config import load_config
>>> from metaopt.compare import CompareConfig, run_compare
>>> metrics = run_compare(load_config(CompareConfig, "compare/quadratic.yaml", ["eval_seeds=10"]))

Modules: :mod:`~metaopt.compare.config` (schema), :mod:`~envs.functional` (pure optimizers over stacked
runs), :mod:`~metaopt.compare.runner` (batched and plain runs), :mod:`~metaopt.compare.harness` (units, chunks,
records, resume), :mod:`~metaopt.compare.stats` and :mod:`~metaopt.compare.results` (tuning choice, intervals,
steps to reach, speed-ups), :mod:`~metaopt.compare.report` and :mod:`~metaopt.compare.figures` (Markdown, CSV, PNG,
TensorBoard), :mod:`~metaopt.compare.command` (``metaopt compare``), :mod:`~metaopt.compare.baseline` (a tuned
baseline as one call, for other commands).
"""

from envs.functional import FunctionalOptimizer, functional_from_spec
from metaopt.compare.baseline import Baseline, evaluate_runs, tuned_baseline
from metaopt.compare.command import compute_results, run_compare, write_outputs
from metaopt.compare.config import CompareConfig, CompareTaskConfig
from metaopt.compare.harness import Plan, Unit, make_plan, sweep
from metaopt.compare.results import OptimizerResult, Records, TaskResult, task_results
from metaopt.compare.runner import RunResult, RunSpec, run_batched, run_plain

__all__ = [
    "Baseline",
    "CompareConfig",
    "CompareTaskConfig",
    "FunctionalOptimizer",
    "OptimizerResult",
    "Plan",
    "Records",
    "RunResult",
    "RunSpec",
    "TaskResult",
    "Unit",
    "compute_results",
    "evaluate_runs",
    "functional_from_spec",
    "make_plan",
    "run_batched",
    "run_compare",
    "run_plain",
    "sweep",
    "task_results",
    "tuned_baseline",
    "write_outputs",
]
