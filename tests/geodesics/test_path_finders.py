"""NEB and the trained curves beside DSS: the same result object, the same certification, the same budgets.

Every finder must reproduce its endpoints bit for bit, give length 1 where the chord passes (a convex task), report
the Appendix E pair and a wall as not connected with a reason, and stop within its budgets; the NEB and curve
arithmetic is checked on its own.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import envs
from envs.errors import ConfigError
from envs.tooling.config import load_config
from geodesics import DSSConfig, ParamSpace, connect, train_to_threshold
from geodesics.commands.connect import ConnectConfig
from geodesics.commands.disconnection import permuted_pair
from geodesics.endpoints import EndpointConfig
from geodesics.finders import get_finder, list_finders
from geodesics.finders.curves import bezier_weights, connect_bezier, connect_polychain, curve_points, polychain_weights
from geodesics.finders.neb import connect_neb, neb_gradients, redistribute, tangents
from geodesics.finders.settings import NEBConfig, TrainedCurveConfig
from tests.geodesics.toys import HALF_CIRCLE, AnalyticTask, annulus, two_wells

FINDERS = ["greedy", "constrained", "neb", "bezier", "polychain"]
A, B = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])
SEGMENT_CHECK = 64 + 2 * 4 * 8  # evaluations of one certified segment with the default CurveConfig


def settings(method: str, **overrides: object) -> DSSConfig:
    """Settings under which each finder connects the annulus at L0 = 0.01 (the chain needs three bends)."""
    bends = 3 if method == "polychain" else 1
    curve = {"bends": bends} if method in ("bezier", "polychain") else {}
    return DSSConfig.using(method, check_every=1, **curve, **overrides)


@pytest.fixture(scope="module")
def appendix_e() -> tuple[ParamSpace, torch.Tensor, torch.Tensor]:
    space = ParamSpace(envs.make_task("permutation"))
    a, b = permuted_pair(space, EndpointConfig(seed=1), 0.01, [0, 1])
    return space, a, b


def test_the_new_finders_are_registered() -> None:
    assert {"neb", "bezier", "polychain"} <= set(list_finders())
    assert get_finder("neb") is connect_neb
    assert get_finder("bezier") is connect_bezier and get_finder("polychain") is connect_polychain


@pytest.mark.parametrize("method", ["neb", "bezier", "polychain"])
def test_the_annulus_is_connected_around_the_hole_with_every_segment_certified(method: str) -> None:
    space = ParamSpace(AnalyticTask(annulus))
    threshold = 0.02 if method == "bezier" else 0.01  # a parabola cannot stay inside the thinner ring
    string = connect(space, A, B, threshold, settings(method))
    assert string.connected and string.reason == "" and string.method == method
    assert bool((string.segment_upper <= threshold).all())
    assert torch.equal(string.beads[0], A) and torch.equal(string.beads[-1], B)
    assert 1.3 <= string.normalized_length <= HALF_CIRCLE + 0.25
    assert bool(((string.beads.norm(dim=1) - 1).abs() <= threshold**0.5).all())  # every vertex inside the ring


@pytest.mark.parametrize("method", FINDERS)
def test_a_convex_task_gives_the_chord_at_length_one(method: str) -> None:
    task = envs.make_task("quadratic")
    space = ParamSpace(task)
    a, b = train_to_threshold(task, 0, 2.5), train_to_threshold(task, 1, 2.5)
    string = connect(space, a, b, 2.5, DSSConfig.using(method))
    assert string.connected and string.num_beads == 2
    assert string.normalized_length == pytest.approx(1.0, abs=1e-12)
    assert torch.equal(string.beads[0], a) and torch.equal(string.beads[1], b)


@pytest.mark.parametrize("method", FINDERS)
def test_the_appendix_e_pair_is_not_connected_and_says_why(method: str, appendix_e) -> None:  # noqa: ANN001
    space, a, b = appendix_e
    string = connect(space, a, b, 0.01, DSSConfig.using(method, max_rounds=2, max_steps=200))
    assert not string.connected and string.reason and string.failure
    assert torch.equal(string.beads[0], a) and torch.equal(string.beads[-1], b)
    assert string.max_loss_upper > 0.01


@pytest.mark.parametrize("method", FINDERS)
def test_a_wall_is_never_crossed(method: str) -> None:
    space = ParamSpace(AnalyticTask(two_wells))
    string = connect(space, A, B, 0.05, settings(method, max_rounds=2, max_steps=100, max_beads=16))
    assert (
        not string.connected and string.reason.split(":")[0] in ("rounds", "beads") or "untrainable" in (string.failure)
    )
    assert string.max_loss > 0.5  # the wall is still on the certified path
    assert torch.equal(string.beads[0], A) and torch.equal(string.beads[-1], B)


def _overshoot(config: DSSConfig, method: str, points: int) -> int:
    """Evaluations a finder may spend once its budget is spent: what it was doing, then certifying its path.

    ``points`` is the number of beads, images or polyline vertices of the path it returned.
    """
    certify = (points - 1) * SEGMENT_CHECK + points
    if method in ("greedy", "constrained"):  # checked between rounds: one round of bead training and its checks
        return int(points * (config.max_steps * (1 + 1 / config.check_every) + 1)) + certify
    if method == "neb":  # checked before each iteration: one iteration, its check and the ends' energies
        return 2 * points + 2 + certify
    return config.options(TrainedCurveConfig).samples + points + certify  # a training step and its vertex check


@pytest.mark.parametrize("method", FINDERS)
def test_the_evaluation_budget_ends_the_run_with_its_reason(method: str) -> None:
    space = ParamSpace(AnalyticTask(annulus))
    config = settings(method, max_evaluations=300, max_steps=40, max_beads=20)  # too few to connect
    before = space.evaluations
    string = connect(space, A, B, 0.01, config)
    used = space.evaluations - before
    assert not string.connected and string.reason.startswith("evaluations: the budget of 300 loss evaluations")
    assert 300 <= used <= 300 + _overshoot(config, method, string.num_beads)
    assert torch.equal(string.beads[0], A) and torch.equal(string.beads[-1], B)


@pytest.mark.parametrize("method", FINDERS)
def test_the_time_budget_ends_the_run_with_its_reason(method: str) -> None:
    string = connect(ParamSpace(AnalyticTask(two_wells)), A, B, 0.05, settings(method, max_seconds=1e-9))
    assert not string.connected and string.reason.startswith("time: the 1e-09 s budget ran out")


@pytest.mark.parametrize(
    ("method", "reason"), [("neb", "rounds: max_rounds=2 cycles"), ("bezier", "rounds: max_rounds=2")]
)
def test_the_round_budget_counts_cycles_and_training_rounds(method: str, reason: str) -> None:
    string = connect(ParamSpace(AnalyticTask(two_wells)), A, B, 0.05, settings(method, max_rounds=2, max_steps=20))
    assert string.reason.startswith(reason) and max(r.round for r in string.history) == 2


def test_the_point_budget_counts_images_and_polyline_vertices() -> None:
    space = ParamSpace(AnalyticTask(annulus))
    neb = connect(space, A, B, 0.01, settings("neb", max_beads=4))  # 3 initial images + 2 endpoints > 4
    assert neb.reason == "beads: 3 more images would exceed max_beads=4 (2 on the path)"
    bezier = connect(space, A, B, 0.02, settings("bezier", max_beads=10))  # a 17-vertex polyline
    assert bezier.reason == "beads: the curve's 17-vertex polyline would exceed max_beads=10"


@pytest.mark.parametrize("method", ["neb", "bezier", "polychain"])
def test_runs_are_deterministic(method: str) -> None:
    space = ParamSpace(AnalyticTask(annulus))
    first, second = (connect(space, A, B, 0.02, settings(method)) for _ in range(2))
    assert torch.equal(first.beads, second.beads) and torch.equal(first.segment_upper, second.segment_upper)


def test_space_counts_one_evaluation_per_model_and_the_gradients() -> None:
    task = envs.make_task("poly_cubic", eval_points=10_000)
    space = ParamSpace(task)
    thetas = torch.stack([space.flatten(task.init_model(s)) for s in range(3)])
    assert len(task.eval_batches()) > 1  # an evaluation of the whole set still counts once per model
    space.batched_eval_loss(thetas)
    assert (space.evaluations, space.gradients) == (3, 0)
    space.batched_value_and_grad(thetas[:2], next(task.batches(0)))
    space.batched_loss(thetas[:1], next(task.batches(0)))
    assert (space.evaluations, space.gradients) == (6, 2)


# -- the arithmetic ---------------------------------------------------------------------------------------------------


def test_tangents_point_uphill_and_turn_smoothly_at_a_peak() -> None:
    path = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 1.0], [3.0, 1.0]], dtype=torch.float64)
    rising = tangents(path, torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(rising[0], torch.tensor([1.0, 1.0], dtype=torch.float64) / 2**0.5)  # towards image 2
    falling = tangents(path, torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(falling[0], torch.tensor([1.0, 0.0], dtype=torch.float64))  # from image 0
    peak = tangents(path, torch.tensor([0.0, 2.0, 1.0, 0.0], dtype=torch.float64))[0]
    # at a peak, the direction of the higher neighbour is weighted by the larger energy difference (H&J eq. 8-10)
    expected = torch.tensor([1.0, 1.0], dtype=torch.float64) * 2 + torch.tensor([1.0, 0.0], dtype=torch.float64) * 1
    torch.testing.assert_close(peak, expected / expected.norm())
    flat = tangents(path, torch.zeros(4, dtype=torch.float64))[0]
    assert float(flat.norm()) == pytest.approx(1.0)


def test_neb_gradients_drop_the_parallel_force_and_the_climber_reverses_it() -> None:
    torch.manual_seed(0)
    path, grads = torch.randn(5, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    energies = torch.tensor([0.0, 1.0, 3.0, 2.0, 0.5], dtype=torch.float64)
    tau = tangents(path, energies)
    plain = neb_gradients(path, energies, grads)
    assert torch.allclose((plain * tau).sum(dim=1), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    climbing = neb_gradients(path, energies, grads, climber=1)
    along = (grads[1] @ tau[1]) * tau[1]
    torch.testing.assert_close(climbing[1], grads[1] - 2 * along)
    torch.testing.assert_close(climbing[[0, 2]], plain[[0, 2]])
    sprung = neb_gradients(path, energies, grads, spring=0.5)
    gaps = (path[1:] - path[:-1]).norm(dim=1)
    torch.testing.assert_close(sprung, plain - 0.5 * (gaps[1:] - gaps[:-1]).unsqueeze(1) * tau)


def test_redistribution_spaces_images_evenly_and_keeps_the_pivots() -> None:
    path = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [1.0, 0.0], [1.0, 3.0]])
    even = redistribute(path, [0, 4])
    gaps = (even[1:] - even[:-1]).norm(dim=1)
    torch.testing.assert_close(gaps, torch.full((4,), 1.0))  # total length 4, four equal gaps on the same polyline
    assert torch.equal(even[0], path[0]) and torch.equal(even[-1], path[-1])
    pinned = redistribute(path, [0, 2, 4])
    assert torch.equal(pinned[2], path[2])


def test_curve_weights_give_the_papers_curves() -> None:
    ts = torch.linspace(0, 1, 11, dtype=torch.float64)
    for weights in (bezier_weights(ts, 1), bezier_weights(ts, 3), polychain_weights(ts, 1), polychain_weights(ts, 3)):
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(11, dtype=torch.float64))
        assert bool((weights >= 0).all())
    quadratic = torch.stack([(1 - ts) ** 2, 2 * ts * (1 - ts), ts**2], dim=1)
    torch.testing.assert_close(bezier_weights(ts, 1), quadratic)
    chain = polychain_weights(torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64), 1)
    torch.testing.assert_close(
        chain, torch.tensor([[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0, 1.0]], dtype=torch.float64)
    )
    a, b, c = torch.zeros(2), torch.tensor([2.0, 0.0]), torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(curve_points(bezier_weights(ts[5:6], 1), a, b, c), torch.tensor([[1.0, 1.0]]))


def test_a_finders_options_load_validate_and_rebuild_from_a_saved_dict(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(ConnectConfig, None, ["dss.finder=neb", "dss.finder.options.initial_images=5"])
    assert cfg.dss.options(NEBConfig) == NEBConfig(initial_images=5)
    assert cfg.dss.finder.options == dataclasses.asdict(NEBConfig(initial_images=5))  # spelled out
    with pytest.raises(ConfigError, match=r"dss.finder.options.bends must be an integer in \[1, inf\)"):
        load_config(ConnectConfig, None, ["dss.finder=bezier", "dss.finder.options.bends=0"])
    with pytest.raises(ConfigError, match="path finder 'greedy' has no option bends; its options: accept_factor"):
        load_config(ConnectConfig, None, ["dss.finder.options.bends=2"])
    with pytest.raises(ConfigError, match="dss.max_evaluations"):
        load_config(ConnectConfig, None, ["dss.max_evaluations=-1"])
    with pytest.raises(TypeError, match="path finder 'neb' has options NEBConfig, not TrainedCurveConfig"):
        cfg.dss.options(TrainedCurveConfig)
    assert DSSConfig.from_dict(dataclasses.asdict(cfg.dss)) == cfg.dss
    capsys.readouterr()
    # the older flat shape, on the command line and in a saved dict: the same settings, one deprecation line
    old = load_config(ConnectConfig, None, ["dss.method=neb", "dss.neb.initial_images=5"])
    assert old.dss == cfg.dss
    assert capsys.readouterr().err.splitlines() == [
        "deprecated config keys, read as their new names: dss.method -> dss.finder.name, dss.neb -> dss.finder.options"
    ]
    flat = {"method": "neb", "neb": {"initial_images": 5}, "trained_curve": {"samples": 4}, "accept_factor": 1.0}
    assert DSSConfig.from_dict(flat) == cfg.dss  # another finder's settings were never read: dropped
    curve = DSSConfig.from_dict({"method": "polychain", "trained_curve": {"samples": 4}, "spring": 0.0})
    assert curve.options(TrainedCurveConfig) == TrainedCurveConfig(samples=4)


def test_a_trained_curve_step_samples_t_once_per_stratum_and_averages_its_gradients() -> None:
    import envs
    from geodesics import DSSConfig, ParamSpace
    from geodesics.finders import curves

    space = ParamSpace.from_task(envs.make_task("poly_cubic"))
    a, b = space.flatten(space.task.init_model(0)), space.flatten(space.task.init_model(1))
    config = DSSConfig.using("polychain", optimizer="sgd", bead_noise=0.0)  # SGD: the gradient's scale shows
    curve, twin = (curves._Curve(space, a, b, 0, config, "polychain") for _ in range(2))
    assert curve.bends == 1
    seen: dict[str, torch.Tensor] = {}
    real = space.batched_value_and_grad

    def spy(points: torch.Tensor, batch: object) -> tuple[torch.Tensor, torch.Tensor]:
        seen["points"] = points
        values, grads = real(points, batch)
        seen["grads"] = grads
        return values, grads

    curve.space = copy.copy(space)
    curve.space.batched_value_and_grad = spy  # type: ignore[method-assign]
    knot = curve.controls[0].clone()
    curve.step()
    n = curve.samples
    first = (seen["points"] - a).norm(dim=1) / (knot - a).norm()
    second = (seen["points"] - knot).norm(dim=1) / (b - knot).norm()
    ts = torch.where(first <= 1 + 1e-4, 0.5 * first, 0.5 + 0.5 * second).double()  # t along the one-bend chain
    strata = torch.floor(ts * n)
    assert torch.equal(strata, torch.arange(n, dtype=torch.float64))  # one sample in each stratum, in order
    assert bool(((ts * n - strata) > 1e-3).any())  # drawn inside the strata, not at their left edges
    weights = curves.polychain_weights(ts, 1).to(a.dtype)
    expected = twin.optimizer.step(twin.controls, weights[:, 1:-1].T @ seen["grads"] / n)  # the samples' mean
    assert torch.allclose(curve.controls, expected, rtol=1e-4, atol=1e-7)
