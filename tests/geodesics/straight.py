"""A trivial path finder, written as a user would add one: the chord between the endpoints, nothing else.

It returns the two endpoints with the certified check of their segment, connected iff that segment's certified
maximum is at most L0. The finder is this one function; the test module that uses it adds the registration line.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from geodesics import DSSConfig, ParamSpace, segment_maxima
from geodesics.finders.base import Pair
from geodesics.finders.common import Budget, finish_string, round_record
from geodesics.path import BeadString


def connect_straight(
    space: ParamSpace,
    pairs: Sequence[Pair],
    thresholds: Sequence[float],
    endpoint_losses: Tensor,
    keys: Sequence[int],
    config: DSSConfig,
) -> list[BeadString]:
    budget = Budget(config.max_seconds)
    starts, ends = torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])
    strings = []
    for (a, b), threshold, losses, check in zip(pairs, thresholds, endpoint_losses,
                                                segment_maxima(space, starts, ends, config.curve)):  # fmt: skip
        history = [round_record(0, [a, b], 0, [check], threshold, 0, budget, config)]
        reason = "" if check.upper <= threshold else f"chord: its certified maximum {check.upper:.6g} is above L0"
        strings.append(finish_string(space, [a, b], losses.tolist(), [check], threshold, reason=reason,
                                     method="straight", history=history, config=config,
                                     initial_segment_max=check.upper))  # fmt: skip
    return strings
