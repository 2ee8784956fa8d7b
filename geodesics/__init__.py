"""Level-set geodesics by Dynamic String Sampling (Freeman & Bruna, ICLR 2017), on many models at once.

>>> space = geodesics.ParamSpace.from_task(task)
>>> string = geodesics.connect(space, a, b, threshold=0.05)
>>> string.connected, string.normalized_length, string.num_beads

The engine, one module per concept: ``space`` (a model as a flat vector, batched losses), ``curve`` (certified
segment maxima), ``beads`` (batched bead training), ``path`` (``BeadString``, the result), ``endpoints`` (models
trained into the level set), ``finders`` (the ``PathFinder`` registry: greedy and constrained DSS, NEB, Bezier and
polychain curves), ``alignment`` (weight matching of hidden units before a finder) and ``plots``. The command line
lives apart in ``commands`` (``geodesics connect|sweep|compare-paths|disconnection|plot``), which the engine never
imports. The names below are imported on first use (:mod:`envs.lazy`): ``import geodesics`` does not import torch.
"""

from pathlib import Path as _Path
from typing import TYPE_CHECKING

import envs as _envs

# A folder envs/ with an __init__.py in the working directory (``python -m``) or on PYTHONPATH would be imported in
# place of the foundation package installed beside this one: refuse it by name instead of failing on a missing name.
if _envs.__file__ is None or _Path(_envs.__file__).resolve().parents[1] != _Path(__file__).resolve().parents[1]:
    raise ImportError(
        f"{_envs.__file__ or _envs.__path__} shadows the package 'envs' installed with geodesics "
        f"({_Path(__file__).resolve().parents[1]}); run from another directory or rename that folder"
    )

from envs.lazy import lazy_exports  # noqa: E402

if TYPE_CHECKING:
    from geodesics.alignment import ALIGNMENTS, align
    from geodesics.curve import CurveConfig, SegmentMax, interpolation_curve, segment_maxima
    from geodesics.endpoints import ThresholdNotReached, train_to_threshold
    from geodesics.finders import DSSConfig, connect, connect_many, list_finders, takes_profiles
    from geodesics.levels import Constant, LevelProfile, Linear
    from geodesics.path import BeadString, RoundRecord, StringLoadError, polyline_at
    from geodesics.projection import Projection, ProjectionConfig, project_to_level
    from geodesics.space import ParamSpace, default_strategy

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "geodesics.alignment": ["ALIGNMENTS", "align"],
        "geodesics.curve": ["CurveConfig", "SegmentMax", "interpolation_curve", "segment_maxima"],
        "geodesics.endpoints": ["ThresholdNotReached", "train_to_threshold"],
        "geodesics.finders": ["DSSConfig", "connect", "connect_many", "list_finders", "takes_profiles"],
        "geodesics.levels": ["Constant", "LevelProfile", "Linear"],
        "geodesics.path": ["BeadString", "RoundRecord", "StringLoadError", "polyline_at"],
        "geodesics.projection": ["Projection", "ProjectionConfig", "project_to_level"],
        "geodesics.space": ["ParamSpace", "default_strategy"],
    },
)

__all__ = [
    "ALIGNMENTS",
    "BeadString",
    "Constant",
    "CurveConfig",
    "DSSConfig",
    "LevelProfile",
    "Linear",
    "ParamSpace",
    "Projection",
    "ProjectionConfig",
    "RoundRecord",
    "SegmentMax",
    "StringLoadError",
    "ThresholdNotReached",
    "align",
    "connect",
    "connect_many",
    "default_strategy",
    "interpolation_curve",
    "list_finders",
    "polyline_at",
    "project_to_level",
    "segment_maxima",
    "takes_profiles",
    "train_to_threshold",
]
