"""Meta-training of learned rules.

The configuration (:mod:`~metaopt.training.config`), what each episode trains on (:mod:`~metaopt.training.schedule`),
validation against tuned Adam (:mod:`~metaopt.training.validation`) and the loop that applies the estimators'
meta-gradients, checkpoints and resumes (:mod:`~metaopt.training.loop`).
"""

from metaopt.training.config import (
    RESUMABLE_KEYS,
    TRAIN_SEED_BASE,
    TUNE_SEED_BASE,
    VAL_SEED_BASE,
    TrainConfig,
    train_seed,
)
from metaopt.training.loop import MetaTrainer, MetaTrainingError
from metaopt.training.schedule import DatasetWindows, FreshEpisodes, on_policy_targets
from metaopt.training.validation import FAR_WORSE_RATIO, far_worse_than_adam, task_key, tune_adam, validate

__all__ = [
    "FAR_WORSE_RATIO",
    "RESUMABLE_KEYS",
    "TRAIN_SEED_BASE",
    "TUNE_SEED_BASE",
    "VAL_SEED_BASE",
    "DatasetWindows",
    "FreshEpisodes",
    "MetaTrainer",
    "MetaTrainingError",
    "TrainConfig",
    "far_worse_than_adam",
    "on_policy_targets",
    "task_key",
    "train_seed",
    "tune_adam",
    "validate",
]
