"""Meta-learned optimizers: the coordinatewise LSTM of "Learning to learn by gradient descent by gradient descent".

>>> import metaopt
>>> opt = metaopt.LearnedOptimizer(model.parameters(), checkpoint="runs/x/checkpoints/best.pt")

Importing the package registers the learned optimizer with ``higher`` (so ``higher.innerloop_ctx`` unrolls it) and in
the optimizer registry of :mod:`envs` as ``learned`` (``envs.make_optimizer("learned", params, checkpoint=path)``).
"""

from envs.optim import register_optimizer
from metaopt.checkpoint import CheckpointError, load_net, save_checkpoint
from metaopt.geodesic import imitation_loss, start_window, warm_state
from metaopt.lstm import CoordinateLSTM, LSTMConfig, lstm_step
from metaopt.objectives import ObjectiveConfig, make_objective, optimizee_loss, register_objective
from metaopt.optimizer import DifferentiableLearnedOptimizer, LearnedOptimizer
from metaopt.targets import TargetDataset, TargetWindow
from metaopt.train import TrainConfig, run_train
from metaopt.unroll import InnerState, Trajectory, start_episode, unroll

register_optimizer("learned", LearnedOptimizer, tunable_lr=False, checkpoint=None)

__all__ = [
    "CheckpointError",
    "CoordinateLSTM",
    "DifferentiableLearnedOptimizer",
    "InnerState",
    "LSTMConfig",
    "LearnedOptimizer",
    "ObjectiveConfig",
    "TrainConfig",
    "TargetDataset",
    "TargetWindow",
    "Trajectory",
    "imitation_loss",
    "load_net",
    "lstm_step",
    "make_objective",
    "optimizee_loss",
    "register_objective",
    "run_train",
    "save_checkpoint",
    "start_episode",
    "start_window",
    "unroll",
    "warm_state",
]
