"""Geodesic targets for the learned optimizer.

Built from base-optimizer runs (:mod:`~metaopt.targets.build`) and stored as shards of windows
(:mod:`~metaopt.targets.dataset`).
"""

from metaopt.targets.build import base_trajectory, make_shard, window_starts
from metaopt.targets.dataset import FORMAT_VERSION, TargetDataset, TargetsError, TargetWindow, load_shard, save_shard

__all__ = [
    "FORMAT_VERSION",
    "TargetDataset",
    "TargetWindow",
    "TargetsError",
    "base_trajectory",
    "load_shard",
    "make_shard",
    "save_shard",
    "window_starts",
]
