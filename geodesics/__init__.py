"""Level-set geodesics by Dynamic String Sampling (Freeman & Bruna, ICLR 2017), on many models at once.

>>> space = geodesics.ParamSpace.from_task(task)
>>> string = geodesics.connect(space, a, b, threshold=0.05)
>>> string.connected, string.normalized_length, string.num_beads
"""

from geodesics.curve import CurveConfig, SegmentMax, interpolation_curve, segment_maxima
from geodesics.dss import DSSConfig, connect, connect_many
from geodesics.space import ParamSpace, default_strategy
from geodesics.string import BeadString, RoundRecord, StringLoadError
from geodesics.train import ThresholdNotReached, train_to_threshold

__all__ = [
    "BeadString",
    "CurveConfig",
    "DSSConfig",
    "ParamSpace",
    "RoundRecord",
    "SegmentMax",
    "StringLoadError",
    "ThresholdNotReached",
    "connect",
    "connect_many",
    "default_strategy",
    "interpolation_curve",
    "segment_maxima",
    "train_to_threshold",
]
