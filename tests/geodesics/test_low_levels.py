"""The low levels: the opt-in L-BFGS finish of the bead trainer (greedy DSS's ``finish`` option).

Near the minimum of the paper's regressions Adam at a fixed rate stalls above the bead target; the finish hands the
beads it leaves there to L-BFGS. Off (the default) it changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

import envs
from envs.errors import InvalidValue
from envs.seeding import derive_seed
from envs.tooling.config import load_config
from geodesics import ParamSpace, connect
from geodesics.beads import BeadSchedule, train_beads
from geodesics.cli import main
from geodesics.commands import SweepConfig
from geodesics.commands.sweep import pair_seeds
from geodesics.endpoints import train_endpoints
from geodesics.finders import DSSConfig, connect_many
from geodesics.finders.constrained import string_penalty

SMALL = {"num_points": 256, "eval_points": 256}
"""A small sample of the paper's quadratic regression: the same 1-4-4-1 net and loss, fast to evaluate."""
LEVEL = 0.004
"""A level near this sample's minimum: Adam at the recipe's 0.05 stalls above 0.95 of it."""
ADAM = {"max_steps": 300, "lr": 0.05}


@pytest.fixture(scope="module")
def small() -> tuple[ParamSpace, Tensor]:
    """The small task's space and two fresh models ``(2, P)`` (seeds whose Adam runs leave the first plateau)."""
    task = envs.make_task("poly_quadratic", **SMALL)
    space = ParamSpace(task)
    return space, torch.stack([space.flatten(task.init_model(seed)) for seed in (1, 3)])


@pytest.fixture(scope="module")
def pair(small: tuple[ParamSpace, Tensor]) -> tuple[Tensor, Tensor]:
    """Two models of the small task trained just below ``LEVEL``."""
    space, _ = small
    trained = train_endpoints(space, [2, 3], LEVEL, max_steps=20000, shared_batches=0)
    assert bool(trained.reached.all())
    return trained.thetas[0], trained.thetas[1]


def test_lbfgs_finish_reaches_a_target_where_adam_stalls(small: tuple[ParamSpace, Tensor]) -> None:
    space, inits = small
    targets = torch.full((2,), 0.95 * LEVEL, dtype=torch.float64)
    adam = train_beads(space, inits, targets, BeadSchedule(**ADAM))
    assert not bool(adam.reached.any())  # Adam's fixed rate leaves both beads above the target
    finished = train_beads(space, inits, targets, BeadSchedule(**ADAM, finish="lbfgs", finish_steps=500))
    assert bool(finished.reached.all())
    assert bool((finished.losses <= targets).all())
    assert torch.equal(finished.losses, space.batched_eval_loss(finished.beads).to(torch.float64))
    assert bool((finished.steps > ADAM["max_steps"]).all()) and bool((finished.steps <= 800).all())
    assert bool((finished.best_losses <= finished.losses).all())


def test_the_finish_leaves_beads_adam_brought_to_their_target_bit_identical(small: tuple[ParamSpace, Tensor]) -> None:
    space, inits = small
    targets = torch.tensor([0.05, 0.95 * LEVEL], dtype=torch.float64)  # the first is easy for Adam
    adam = train_beads(space, inits, targets, BeadSchedule(**ADAM))
    finished = train_beads(space, inits, targets, BeadSchedule(**ADAM, finish="lbfgs", finish_steps=500))
    assert bool(adam.reached[0]) and not bool(adam.reached[1]) and bool(finished.reached[1])
    assert torch.equal(finished.beads[0], adam.beads[0]) and int(finished.steps[0]) == int(adam.steps[0])
    off = train_beads(space, inits, targets, BeadSchedule(**ADAM, finish="none", finish_steps=500))
    for name in ("beads", "losses", "reached", "steps", "best_losses"):
        assert torch.equal(getattr(off, name), getattr(adam, name)), name


def test_greedy_dss_connects_with_the_finish_where_the_default_stops(
    small: tuple[ParamSpace, Tensor], pair: tuple[Tensor, Tensor]
) -> None:
    space, _ = small
    a, b = pair
    default = DSSConfig(max_steps=ADAM["max_steps"], max_rounds=14, keep_snapshots=False)
    plain = connect(space, a, b, LEVEL, default)
    assert not plain.connected and "could not reach its target" in plain.reason
    finished = connect(space, a, b, LEVEL, default.with_options(finish="lbfgs", finish_steps=500))
    assert finished.connected, finished.reason
    assert finished.max_loss <= LEVEL
    assert torch.equal(finished.beads[0], a) and torch.equal(finished.beads[-1], b)
    # off, whatever finish_steps says, the string is the default's, bit for bit
    off = connect(space, a, b, LEVEL, default.with_options(finish_steps=7))
    assert torch.equal(off.beads, plain.beads) and off.reason == plain.reason


def test_batched_strings_with_the_finish_give_what_each_gives_alone(
    small: tuple[ParamSpace, Tensor], pair: tuple[Tensor, Tensor]
) -> None:
    space, _ = small
    a, b = pair
    config = DSSConfig.using("greedy", max_steps=ADAM["max_steps"], max_rounds=3, finish="lbfgs", finish_steps=300,
                             keep_snapshots=False)  # fmt: skip
    together = connect_many(space, [(a, b), (b, a)], LEVEL, config, keys=[0, 1])
    alone = [connect_many(space, [(a, b)], LEVEL, config, keys=[0])[0],
             connect_many(space, [(b, a)], LEVEL, config, keys=[1])[0]]  # fmt: skip
    for one, other in zip(together, alone):
        assert torch.equal(one.beads, other.beads) and one.reason == other.reason


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"finish": "newton"}, "finder.options.finish must be one of none, lbfgs, got 'newton'"),
        ({"finish": "lbfgs", "finish_steps": 0}, "finder.options.finish_steps must be an integer in [1, inf), got 0"),
        ({"finish_steps": 2.5}, "finder.options.finish_steps must be an integer in [1, inf), got 2.5"),
    ],
)
def test_bad_finish_settings_name_the_key_and_the_valid_values(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        DSSConfig.using("greedy", **options)
    assert str(caught.value) == message
    with pytest.raises(InvalidValue, match="path finder 'constrained' has no option finish; its options: spring, "):
        DSSConfig.using("constrained", finish="lbfgs")


def test_bad_finish_at_the_command_line_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    assert main(["connect", "dss.finder.options.finish=bfgs", f"out={out}"]) == 2
    assert "dss.finder.options.finish must be one of none, lbfgs, got 'bfgs'" in capsys.readouterr().err
    assert not out.exists()


def test_train_beads_refuses_bad_finish_arguments(small: tuple[ParamSpace, Tensor]) -> None:
    space, inits = small
    targets = torch.full((2,), 0.01, dtype=torch.float64)
    with pytest.raises(ValueError, match="finish must be one of none, lbfgs"):
        train_beads(space, inits, targets, BeadSchedule(max_steps=1, lr=0.01, finish="bfgs"))
    with pytest.raises(ValueError, match="finish_steps must be a non-negative integer"):
        train_beads(space, inits, targets, BeadSchedule(max_steps=1, lr=0.01, finish="lbfgs", finish_steps=-1))
    penalty = string_penalty(inits[0], inits[1], 0.1, 1.0)
    with pytest.raises(ValueError, match="cannot take a penalty"):
        train_beads(space, inits, targets, BeadSchedule(max_steps=1, lr=0.01, finish="lbfgs"), penalty=penalty)


@pytest.mark.parametrize(("name", "first"), [("poly_quadratic", 7), ("poly_cubic", 13)])
def test_low_sweeps_load_and_train_the_shipped_sweeps_endpoints(name: str, first: int) -> None:
    low = load_config(SweepConfig, f"geodesics/sweep/low/{name}.yaml", [])
    shipped = load_config(SweepConfig, f"geodesics/sweep/{name}.yaml", [])
    assert low.dss.finder.options["finish"] == "lbfgs" and low.task.name == name
    for k, threshold in enumerate(low.thresholds):
        assert shipped.thresholds[first + k] == threshold
        for p in range(low.pairs):
            assert pair_seeds(low, k, p) == pair_seeds(shipped, first + k, p)


def _offsets(beads: Tensor, anchors: Tensor, normals: Tensor) -> Tensor:
    """Each bead's distance from its hyperplane, over its distance from its start."""
    moved = beads - anchors
    return (moved * normals).sum(1).abs() / moved.norm(dim=1).clamp(min=1e-30)


def test_beads_on_a_hyperplane_stay_on_it_through_adam_and_the_finish(small: tuple[ParamSpace, Tensor]) -> None:
    space, inits = small
    normals = torch.randn(inits.shape, generator=torch.Generator().manual_seed(0), dtype=inits.dtype)
    normals = normals / normals.norm(dim=1, keepdim=True)
    targets = torch.full((2,), 0.95 * LEVEL, dtype=torch.float64)
    free = train_beads(space, inits, targets, BeadSchedule(**ADAM, finish="lbfgs", finish_steps=500))
    held = train_beads(space, inits, targets, BeadSchedule(**ADAM, finish="lbfgs", finish_steps=500), normals=normals)
    assert bool(held.reached.all())  # the constraint still leaves room to reach the level
    assert bool((_offsets(held.beads, inits, normals) < 1e-5).all())
    assert bool((_offsets(free.beads, inits, normals) > 1e-2).all())  # unconstrained, they leave the plane
    assert bool(((held.beads - inits).norm(dim=1) > 1e-2).all())


def test_greedy_dss_on_hyperplanes_keeps_every_new_bead_at_its_place_on_the_segment(
    small: tuple[ParamSpace, Tensor], pair: tuple[Tensor, Tensor]
) -> None:
    space, _ = small
    a, b = pair
    config = DSSConfig.using("greedy", max_steps=ADAM["max_steps"], max_rounds=14, finish="lbfgs", finish_steps=500,
                             hyperplane=True, bead_noise=0.0)  # fmt: skip
    string = connect(space, a, b, 2.5 * LEVEL, config)
    assert string.connected, string.reason
    assert len(string.beads) > 3
    assert torch.equal(string.beads[0], a) and torch.equal(string.beads[-1], b)
    for before, after in zip(string.history, string.history[1:]):  # each round's new beads against their segments
        old, new = before.beads, after.beads
        assert old is not None and new is not None
        kept = 0
        for i in range(len(new)):
            if kept < len(old) and torch.equal(new[i], old[kept]):
                kept += 1
                continue
            left, right = new[i - 1], new[i + 1]
            chord = right - left
            t = float((new[i] - left) @ chord / (chord @ chord))
            assert 0.0 < t < 1.0  # it stayed between its neighbours (at t*, off the ends)
        assert kept == len(old)


def test_hyperplane_is_greedy_only() -> None:
    with pytest.raises(InvalidValue, match="path finder 'constrained' has no option hyperplane"):
        DSSConfig.using("constrained", hyperplane=True)


def test_a_restart_continues_a_bead_from_where_it_stopped(small: tuple[ParamSpace, Tensor]) -> None:
    space, inits = small
    targets = torch.full((2,), 0.95 * LEVEL, dtype=torch.float64)
    short = {"max_steps": 100, "lr": 0.05, "finish": "lbfgs", "finish_steps": 20}  # too short: both stop above
    once = train_beads(space, inits, targets, BeadSchedule(**short))
    assert not bool(once.reached.any())
    restarted = train_beads(space, inits, targets, BeadSchedule(**short, restarts=3))
    assert bool(restarted.reached[0])
    assert bool((restarted.steps > once.steps).all())  # the failing beads trained again
    assert bool((restarted.best_losses <= once.best_losses).all())
    assert torch.equal(restarted.losses, space.batched_eval_loss(restarted.beads).to(torch.float64))
    # a restart is a second run from where the first stopped, on the restart's own batch seed
    again = train_beads(space, once.beads, targets, BeadSchedule(**short, restarts=2), seed=derive_seed(0, "restart"))
    assert torch.equal(again.beads, restarted.beads)
    # a bead that reached its target is not restarted
    easy = torch.tensor([0.07, 0.95 * LEVEL], dtype=torch.float64)  # bead 0 ends at 0.045-0.060 by the threads
    plain = train_beads(space, inits, easy, BeadSchedule(**short))
    mixed = train_beads(space, inits, easy, BeadSchedule(**short, restarts=2))
    assert bool(plain.reached[0]) and torch.equal(mixed.beads[0], plain.beads[0])


def test_bad_restarts_name_the_key_and_the_range() -> None:
    with pytest.raises(InvalidValue) as caught:
        DSSConfig.using("greedy", restarts=-1)
    assert str(caught.value) == "finder.options.restarts must be an integer in [0, inf), got -1"
    with pytest.raises(InvalidValue, match="path finder 'neb' has no option restarts"):
        DSSConfig.using("neb", restarts=1)


def test_the_endpoint_finish_trains_what_adam_leaves_above_the_level(small: tuple[ParamSpace, Tensor]) -> None:
    space, _ = small
    seeds = [2, 3]  # seed 4's run is chaotic here: finished or not depending on the intra-op threads
    plain = train_endpoints(space, seeds, LEVEL, max_steps=1000, shared_batches=0)
    finished = train_endpoints(space, seeds, LEVEL, max_steps=1000, shared_batches=0, finish="lbfgs", finish_steps=500)
    assert not bool(plain.reached.all()) and bool(finished.reached.all())
    for row in plain.reached.nonzero().squeeze(1).tolist():  # those Adam trained are the same bits
        assert torch.equal(finished.thetas[row], plain.thetas[row])
    assert bool((finished.losses <= LEVEL).all())
    with pytest.raises(ValueError, match="needs shared batches"):
        train_endpoints(space, seeds, LEVEL, max_steps=10, finish="lbfgs", finish_steps=5)


def test_bad_endpoint_finish_settings_name_the_key() -> None:
    with pytest.raises(InvalidValue, match="train_finish must be one of none, lbfgs, got 'newton'"):
        SweepConfig(train_finish="newton")
    with pytest.raises(InvalidValue, match=r"train_finish_steps must be an integer in \[1, inf\), got 0"):
        SweepConfig(train_finish="lbfgs", train_finish_steps=0)


def test_one_restart_is_one_more_run_and_the_best_loss_is_kept_across_runs(small: tuple[ParamSpace, Tensor]) -> None:
    space, inits = small
    targets = torch.full((2,), 0.95 * LEVEL, dtype=torch.float64)
    short = {"max_steps": 60, "lr": 0.05}
    once = train_beads(space, inits, targets, BeadSchedule(**short))
    assert not bool(once.reached.any())
    restarted = train_beads(space, inits, targets, BeadSchedule(**short, restarts=1))
    second = train_beads(space, once.beads, targets, BeadSchedule(**short), seed=derive_seed(0, "restart"))
    assert torch.equal(restarted.beads, second.beads)  # restarts=1 is exactly one more run
    assert torch.equal(restarted.steps, once.steps + second.steps)
    assert torch.equal(restarted.best_losses, torch.minimum(once.best_losses, second.best_losses))


def test_restarts_keep_the_best_loss_and_count_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted bead keeps the lowest loss of all its runs (the restart starts where the last run ended, often
    above its best) and the steps of all of them; the beads that reached their target are left alone."""
    from geodesics import beads as module

    run = module.BeadTraining(
        beads=torch.zeros(3, 2), losses=torch.tensor([0.5, 0.9, 0.1]), reached=torch.tensor([False, False, True]),
        steps=torch.tensor([10, 10, 4]), best_losses=torch.tensor([0.2, 0.8, 0.1]),
    )  # fmt: skip
    again = module.BeadTraining(
        beads=torch.ones(2, 2), losses=torch.tensor([0.4, 0.3]), reached=torch.tensor([False, True]),
        steps=torch.tensor([7, 3]), best_losses=torch.tensor([0.4, 0.3]),
    )  # fmt: skip
    monkeypatch.setattr(module, "train_beads", lambda *args, **kwargs: again)
    schedule = BeadSchedule(max_steps=10, lr=0.1, restarts=1)
    module._restart(None, run, torch.zeros(3), schedule, 0, None)  # type: ignore[arg-type]
    assert run.best_losses.tolist() == pytest.approx([0.2, 0.3, 0.1])
    assert run.steps.tolist() == [17, 13, 4] and run.reached.tolist() == [False, True, True]
    assert torch.equal(run.beads[2], torch.zeros(2)) and torch.equal(run.beads[0], torch.ones(2))
