"""The imitation objective's value: the mean squared distance to the targets after the start, over the chord's."""

from __future__ import annotations

import pytest
import torch

from metaopt.inner.unroll import Trajectory
from metaopt.objectives import ObjectiveConfig, imitation_loss, make_objective, optimizee_loss


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


def test_the_imitation_objectives_add_loss_weight_times_the_l2l_term_to_the_imitation() -> None:
    iterates = torch.tensor([[0.0, 0.0], [0.4, 0.1], [1.0, 0.3]])
    targets = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]])
    losses = torch.tensor([3.0, 2.0, 1.5])
    for name, key in (("geodesic", "targets"), ("teacher", "teacher")):
        trajectory = Trajectory(losses=losses, iterates=iterates, start_step=0, context={key: targets})
        alone = imitation_loss(iterates, targets)
        plain = make_objective(ObjectiveConfig(name))(trajectory)
        mixed = make_objective(ObjectiveConfig(name, {"loss_weight": 0.25}, loss_weights=[1.0, 2.0]))(trajectory)
        torch.testing.assert_close(plain, alone)
        torch.testing.assert_close(mixed, alone + 0.25 * optimizee_loss(trajectory, [1.0, 2.0]))
        assert float(mixed) == pytest.approx(float(alone) + 0.25 * (2.0 + 2 * 1.5))
