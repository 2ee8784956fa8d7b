"""Greedy and constrained DSS on problems whose geometry is known, and its failure reports."""

from __future__ import annotations

import math

import pytest
import torch

import envs
import geodesics
from geodesics import (
    BeadString,
    DSSConfig,
    ParamSpace,
    StringLoadError,
    connect,
    train_to_threshold,
)
from geodesics.finders.constrained import string_penalty
from tests.geodesics.toys import HALF_CIRCLE, AnalyticTask, annulus, two_wells

A, B = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])
EXACT = DSSConfig(check_every=1)  # toy problems: stop each bead as soon as it is inside the level set


@pytest.fixture(scope="module")
def poly_cubic() -> tuple[ParamSpace, torch.Tensor, torch.Tensor]:
    task = envs.make_task("poly_cubic")
    return ParamSpace(task), train_to_threshold(task, 0, 0.05), train_to_threshold(task, 1, 0.05)


@pytest.mark.parametrize("method", ["greedy", "constrained"])
def test_annulus_half_circle(method: str) -> None:
    space = ParamSpace(AnalyticTask(annulus))
    string = connect(space, A, B, threshold=0.01, config=DSSConfig.using(method, check_every=1))
    assert string.connected and string.reason == ""
    assert bool((string.segment_upper <= 0.01).all())  # every segment's certified maximum is below L0
    assert 1.3 <= string.normalized_length <= HALF_CIRCLE + 0.05
    assert torch.equal(string.beads[0], A) and torch.equal(string.beads[-1], B)
    radii = string.beads.norm(dim=1)
    assert bool(((radii - 1).abs() <= 0.1).all())  # every bead is inside the ring


def test_convex_task_connects_with_no_bead_and_length_one() -> None:
    task = envs.make_task("quadratic")
    space = ParamSpace(task)
    a, b = train_to_threshold(task, 0, 2.5), train_to_threshold(task, 1, 2.5)
    string = connect(space, a, b, threshold=2.5)
    assert string.connected and string.num_beads == 2
    assert string.normalized_length == pytest.approx(1.0, abs=1e-12)


def test_wall_higher_than_threshold_is_not_crossed() -> None:
    space = ParamSpace(AnalyticTask(two_wells))
    config = DSSConfig(max_rounds=6, check_every=1)
    string = connect(space, A, B, threshold=0.05, config=config)
    assert not string.connected
    assert string.reason.startswith("rounds: max_rounds=6")
    assert string.history[-1].round <= 6 and string.num_beads <= config.max_beads
    assert string.max_loss > 0.9  # the wall is still on the path


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (DSSConfig(max_steps=1, check_every=1, lr=1e-6), r"bead 1 could not reach its target alpha\*L0 = 0.0095"),
        (DSSConfig(max_beads=3, check_every=1), "beads: 2 more beads would exceed max_beads=3"),
        (DSSConfig(max_seconds=1e-9), "time: the 1e-09 s budget ran out"),
    ],
)
def test_budgets_end_the_run_with_their_reason(config: DSSConfig, reason: str) -> None:
    string = connect(ParamSpace(AnalyticTask(annulus)), A, B, threshold=0.01, config=config)
    assert not string.connected
    assert string.reason.startswith(reason.split(r"\*")[0].replace("\\", "")) or reason in string.reason
    assert torch.equal(string.beads[0], A) and torch.equal(string.beads[-1], B)


def test_endpoints_are_bit_identical_and_runs_are_deterministic(poly_cubic) -> None:  # noqa: ANN001
    space, a, b = poly_cubic
    first = connect(space, a, b, 0.05)
    second = connect(space, a, b, 0.05)
    assert first.connected
    assert torch.equal(first.beads[0], a) and torch.equal(first.beads[-1], b)
    assert torch.equal(first.beads, second.beads)
    assert first.num_beads > 2 and first.normalized_length > 1


def test_threshold_below_an_endpoint_is_a_clear_error(poly_cubic) -> None:  # noqa: ANN001
    space, a, b = poly_cubic
    with pytest.raises(ValueError, match=r"endpoint a has evaluation loss .* above the threshold L0 = 0.01"):
        connect(space, a, b, 0.01)
    with pytest.raises(ValueError, match=r"P = 33"):
        connect(space, a[:-1], b, 0.05)


def test_string_save_load_and_arc_length_resampling(poly_cubic, tmp_path) -> None:  # noqa: ANN001
    space, a, b = poly_cubic
    string = connect(space, a, b, 0.05)
    string.save(tmp_path / "s.pt")
    loaded = BeadString.load(tmp_path / "s.pt")
    assert torch.equal(loaded.beads, string.beads) and loaded.metrics() == string.metrics()
    assert loaded.history[-1].beads is not None and loaded.task == {
        "name": "poly_cubic",
        "options": loaded.task["options"],
    }
    points = string.resample(9)
    assert torch.equal(points[0], a) and torch.equal(points[-1], b)
    steps = (points[1:].double() - points[:-1].double()).norm(dim=1)
    # equally spaced in arc length: chords are at most the arc between them, and sum to at most the length
    assert float(steps.sum()) <= string.length + 1e-6
    assert float(steps.max()) <= string.length / 8 + 1e-5
    (tmp_path / "bad.pt").write_bytes(b"not a string")
    with pytest.raises(StringLoadError, match="not a readable BeadString"):
        BeadString.load(tmp_path / "bad.pt")


def test_constrained_penalty_gradient_matches_autograd() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    interior = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    penalty = string_penalty(a, b, spring=0.7, kappa=1.3)
    values, grads = penalty(interior.detach())
    # neighbours are held fixed: differentiate each bead's own term with respect to that bead only
    for i in range(3):
        frozen = interior.detach().clone()
        row = frozen[i].clone().requires_grad_(True)
        full = torch.cat([frozen[:i], row[None], frozen[i + 1 :]])
        value = _penalty_row(a, b, full, i, 0.7, 1.3)
        (grad,) = torch.autograd.grad(value, row)
        torch.testing.assert_close(grads[i], grad)
        torch.testing.assert_close(values[i], value.detach())


def _penalty_row(a, b, interior, i, spring, kappa):  # noqa: ANN001, ANN202
    full = torch.cat([a[None], interior, b[None]])
    prev, here, nxt = full[i], full[i + 1], full[i + 2]
    normal = (prev - nxt) / (prev - nxt).norm()
    return spring * ((here - prev).norm() + (here - nxt).norm()) + kappa * ((here - (prev + nxt) / 2) @ normal).abs()


def test_public_names() -> None:
    assert geodesics.connect is connect and geodesics.ParamSpace is ParamSpace
    assert math.isfinite(DSSConfig().alpha)


def test_concurrent_pairs_give_what_each_pair_gives_alone(poly_cubic) -> None:  # noqa: ANN001
    space, a, b = poly_cubic
    c = train_to_threshold(space.task, 2, 0.05)
    together = geodesics.connect_many(space, [(a, b), (a, c)], 0.05, keys=[0, 7])
    alone = [connect(space, a, b, 0.05), geodesics.connect_many(space, [(a, c)], 0.05, keys=[7])[0]]
    # the default (loop) evaluation is exact per row, so sharing the batches changes no bit of either string
    assert space.exact
    for x, y in zip(together, alone):
        assert x.connected == y.connected and x.num_beads == y.num_beads
        assert x.normalized_length == y.normalized_length
        assert torch.equal(x.beads, y.beads) and torch.equal(x.segment_upper, y.segment_upper)


def test_each_pair_can_have_its_own_level() -> None:
    space = ParamSpace(AnalyticTask(annulus))
    c = torch.tensor([0.0, 1.0])
    loose, tight = geodesics.connect_many(space, [(A, c), (A, c)], [2.0, 0.01], EXACT)
    assert loose.connected and loose.num_beads == 2 and loose.threshold == 2.0
    assert tight.connected and tight.num_beads > 2 and bool((tight.segment_upper <= 0.01).all())
