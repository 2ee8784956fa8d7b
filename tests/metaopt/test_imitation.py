"""The imitation objective's value: the mean squared distance to the targets after the start, over the chord's."""

from __future__ import annotations

import pytest
import torch

from metaopt.objectives import imitation_loss


def test_the_imitation_loss_is_the_mean_distance_after_the_start_over_the_squared_chord() -> None:
    targets = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])  # chord (2, 0): squared length 4
    iterates = torch.tensor([[9.0, 9.0], [2.0, 2.0], [3.0, 3.0]])  # the start is not scored
    assert float(imitation_loss(iterates, targets)) == pytest.approx((1.0 + 4.0) / 2 / 4)


def test_the_imitation_loss_does_not_depend_on_the_scale_or_the_origin() -> None:
    g = torch.Generator().manual_seed(0)
    targets, iterates = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    base = float(imitation_loss(iterates, targets))
    shift = torch.randn(5, generator=g)
    assert float(imitation_loss(3 * iterates + shift, 3 * targets + shift)) == pytest.approx(base, rel=1e-5)
    assert float(imitation_loss(targets, targets)) == 0.0
