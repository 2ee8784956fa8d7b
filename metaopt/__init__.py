"""Meta-learned optimizers: learned rules meta-trained through ``higher`` unrolls on plain or geodesic objectives.

The first rule is the coordinatewise LSTM of "Learning to learn by gradient descent by gradient descent".

>>> import metaopt
>>> opt = metaopt.LearnedOptimizer(model.parameters(), checkpoint="runs/x/checkpoints/best.pt")

Sub-packages: ``rules`` (the :class:`LearnedRule` interface and registry), ``shells`` (the optimizer and its
``higher`` twin), ``inner`` (optimizees and unrolls), ``objectives``, ``outer`` (the :class:`Estimator` interface and
registry), ``training`` (the meta-training loop), ``targets`` (geodesic-target datasets), ``compare`` (the
comparison harness) and ``commands`` (``metaopt train|targets|compare|quickstart``). Importing the package registers
the learned optimizer in the optimizer registry of :mod:`envs` as ``learned`` (``envs.make_optimizer("learned",
params, checkpoint=path)``), by name, so that it imports nothing else: the names below are imported on first use
(:mod:`envs.lazy`), and ``metaopt.shells``, imported with :class:`LearnedOptimizer`, registers it with ``higher`` (so
``higher.innerloop_ctx`` unrolls it).
"""

from pathlib import Path as _Path
from typing import TYPE_CHECKING

import envs as _envs

# A folder envs/ with an __init__.py in the working directory (``python -m``) or on PYTHONPATH would be imported in
# place of the foundation package installed beside this one: refuse it by name instead of failing on a missing name.
if _envs.__file__ is None or _Path(_envs.__file__).resolve().parents[1] != _Path(__file__).resolve().parents[1]:
    raise ImportError(
        f"{_envs.__file__ or _envs.__path__} shadows the package 'envs' installed with metaopt "
        f"({_Path(__file__).resolve().parents[1]}); run from another directory or rename that folder"
    )

from envs.lazy import lazy_exports  # noqa: E402
from envs.training.optim import register_optimizer  # noqa: E402

if TYPE_CHECKING:
    from metaopt.checkpoint import CheckpointError, load_net, save_checkpoint
    from metaopt.commands import run_train
    from metaopt.inner import InnerState, Trajectory, start_episode, start_window, unroll, warm_state
    from metaopt.objectives import ObjectiveConfig, imitation_loss, make_objective, optimizee_loss, register_objective
    from metaopt.outer import Estimator, EstimatorSetup, MetaGradient, list_estimators, register_estimator
    from metaopt.pretrained import list_pretrained
    from metaopt.rules import CoordinateLSTM, LearnedRule, LSTMConfig, list_rules, lstm_step, register_rule
    from metaopt.shells import DifferentiableLearnedOptimizer, LearnedOptimizer
    from metaopt.targets import TargetDataset, TargetWindow
    from metaopt.training import TrainConfig

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "metaopt.checkpoint": ["CheckpointError", "load_net", "save_checkpoint"],
        "metaopt.commands": ["run_train"],
        "metaopt.inner": ["InnerState", "Trajectory", "start_episode", "start_window", "unroll", "warm_state"],
        "metaopt.objectives": [
            "ObjectiveConfig",
            "imitation_loss",
            "make_objective",
            "optimizee_loss",
            "register_objective",
        ],
        "metaopt.outer": ["Estimator", "EstimatorSetup", "MetaGradient", "list_estimators", "register_estimator"],
        "metaopt.pretrained": ["list_pretrained"],
        "metaopt.rules": ["CoordinateLSTM", "LearnedRule", "LSTMConfig", "list_rules", "lstm_step", "register_rule"],
        "metaopt.shells": ["DifferentiableLearnedOptimizer", "LearnedOptimizer"],
        "metaopt.targets": ["TargetDataset", "TargetWindow"],
        "metaopt.training": ["TrainConfig"],
    },
)

register_optimizer("learned", "metaopt.shells:LearnedOptimizer", tunable_lr=False, checkpoint=None)

__all__ = [
    "CheckpointError",
    "CoordinateLSTM",
    "DifferentiableLearnedOptimizer",
    "Estimator",
    "EstimatorSetup",
    "InnerState",
    "LSTMConfig",
    "LearnedOptimizer",
    "LearnedRule",
    "MetaGradient",
    "ObjectiveConfig",
    "TrainConfig",
    "TargetDataset",
    "TargetWindow",
    "Trajectory",
    "imitation_loss",
    "list_estimators",
    "list_pretrained",
    "list_rules",
    "load_net",
    "lstm_step",
    "make_objective",
    "optimizee_loss",
    "register_estimator",
    "register_objective",
    "register_rule",
    "run_train",
    "save_checkpoint",
    "start_episode",
    "start_window",
    "unroll",
    "warm_state",
]
