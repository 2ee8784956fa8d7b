"""The comparison harness: tuned baselines on paired seeds, batched runs, resumable records.

>>> from envs.tooling.config import load_config
>>> from metaopt.compare import CompareConfig, compute_results, write_outputs
>>> cfg = load_config(CompareConfig, "compare/quadratic.yaml", ["eval_seeds=10"])
>>> run, tasks = compute_results(cfg)
>>> write_outputs(run, cfg, tasks)

Modules: :mod:`~metaopt.compare.config` (schema), :mod:`~envs.training.functional` (pure optimizers over stacked
runs), :mod:`~metaopt.compare.runner` (batched and plain runs), :mod:`~metaopt.compare.harness` (units, chunks,
records, resume), :mod:`~metaopt.compare.stats` and :mod:`~metaopt.compare.results` (tuning choice, intervals,
steps to reach, speed-ups), :mod:`~metaopt.compare.report`, :mod:`~metaopt.compare.figures` and
:mod:`~metaopt.compare.outputs` (Markdown, CSV, PNG, TensorBoard), :mod:`~metaopt.compare.baseline` (a tuned
baseline as one call, for other commands). The command ``metaopt compare`` is :mod:`metaopt.commands.compare`.
"""

from envs.training.functional import FunctionalOptimizer, functional_from_spec
from metaopt.compare.baseline import Baseline, evaluate_runs, tuned_baseline
from metaopt.compare.config import CompareConfig, CompareTaskConfig
from metaopt.compare.harness import Plan, Unit, compute_results, make_plan, sweep
from metaopt.compare.outputs import write_outputs
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
    "run_plain",
    "sweep",
    "task_results",
    "tuned_baseline",
    "write_outputs",
]
