"""AdamW with a cosine schedule: equal to torch's AdamW + CosineAnnealingLR, and its functional twin row by row."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

import envs
from envs.training.functional import AdamWCosine as FunctionalAdamWCosine
from envs.training.functional import functional_from_spec
from envs.training.optim import get_optimizer_spec, make_optimizer
from envs.training.schedules import AdamWCosine


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    w = torch.randn(7, 3)
    return w.clone().requires_grad_(), w.clone().requires_grad_()


@pytest.mark.parametrize(("weight_decay", "eta_min", "total"), [(0.01, 0.0, 9), (0.1, 1e-3, 4), (0.0, 0.0, 1)])
def test_equals_adamw_with_cosine_annealing_step_for_step(weight_decay: float, eta_min: float, total: int) -> None:
    a, b = _pair()
    ours = AdamWCosine([a], lr=0.05, weight_decay=weight_decay, total_steps=total, eta_min=eta_min)
    theirs = torch.optim.AdamW([b], lr=0.05, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=total, eta_min=eta_min)
    target = torch.randn(7, 3)
    for step in range(2 * total + 3):  # past the horizon too, where torch's recursion turns the cosine back up
        for w, opt in ((a, ours), (b, theirs)):
            opt.zero_grad()
            ((w - target) ** 4).sum().backward()
            opt.step()
        schedule.step()
        assert ours.param_groups[0]["lr"] == theirs.param_groups[0]["lr"], step
        assert torch.equal(a, b), step
    assert ours.param_groups[0]["lr"] != 0.05  # the schedule moved


def test_state_dict_resumes_the_schedule_where_it_was() -> None:
    a, b = _pair()
    first = AdamWCosine([a], lr=0.1, total_steps=6)
    for _ in range(3):
        first.zero_grad()
        (a**2).sum().backward()
        first.step()
    with torch.no_grad():
        b.copy_(a)
    second = AdamWCosine([b], lr=0.1, total_steps=6)
    second.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
    assert second.param_groups[0]["lr"] == first.param_groups[0]["lr"]
    for _ in range(3):
        for w, opt in ((a, first), (b, second)):
            opt.zero_grad()
            (w**2).sum().backward()
            opt.step()
        assert torch.equal(a, b)


@pytest.mark.parametrize("total", [0, -3, 2.5, True])
def test_bad_horizon_is_refused(total: object) -> None:
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1"):
        AdamWCosine([torch.zeros(1, requires_grad=True)], total_steps=total)  # type: ignore[arg-type]


def test_registered_with_its_horizon_and_a_functional_twin() -> None:
    spec = get_optimizer_spec("adamw_cosine")
    assert spec.factory is AdamWCosine and spec.tunable_lr and spec.horizon_option == "total_steps"
    assert spec.with_horizon({}, 50) == {"total_steps": 50}
    assert spec.with_horizon({"total_steps": 7}, 50) == {"total_steps": 7}
    twin = functional_from_spec(spec)
    assert isinstance(twin, FunctionalAdamWCosine)
    assert twin.weight_decay == 0.01 and twin.decoupled_weight_decay and twin.total_steps is None
    assert twin.with_horizon(30).total_steps == 30  # type: ignore[attr-defined]
    opt = make_optimizer("adamw_cosine", [torch.zeros(1, requires_grad=True)], lr=0.1, total_steps=3)
    assert isinstance(opt, AdamWCosine) and opt.total_steps == 3


def test_fit_gives_a_named_schedule_the_run_horizon() -> None:
    task = envs.make_task("tabular_mlp", dataset="iris")
    model = task.init_model(0)
    result = envs.fit(task, 0, model=model, optimizer="adamw_cosine", lr=0.01, steps=12)
    assert result.steps == 12 and not result.diverged


def test_functional_twin_matches_torch_row_by_row() -> None:
    from metaopt.compare.runner import RunSpec, run_batched, run_plain

    task = envs.make_task("tabular_mlp", dataset="wine", dtype=torch.float64)
    runs = [RunSpec(0, 0.003), RunSpec(1, 0.03), RunSpec(0, 0.1)]
    twin = functional_from_spec(get_optimizer_spec("adamw_cosine"))
    assert twin is not None
    batched = run_batched(task, runs, 25, twin)
    for run, result in zip(runs, batched):
        plain = run_plain(task, run, 25, "adamw_cosine")
        assert result.losses == pytest.approx(plain.losses, rel=1e-9, abs=1e-12)
        assert result.eval_loss == pytest.approx(plain.eval_loss, rel=1e-9)
    # a constant-rate AdamW twin does not match: the schedule is really applied
    plain_adamw = run_plain(task, runs[2], 25, "adamw")
    assert batched[2].losses[-1] != pytest.approx(plain_adamw.losses[-1], rel=1e-6)


def test_warmup_then_cosine_values() -> None:
    from envs.training.schedules import warmup_cosine_lr

    base, total, warmup, floor = 0.2, 10, 4, 0.01
    rates = [warmup_cosine_lr(base, t, total, warmup, floor) for t in range(1, 14)]
    assert rates[:4] == pytest.approx([0.05, 0.1, 0.15, 0.2])  # linear up to the peak at update 4
    assert rates[4] == pytest.approx(0.2)  # the cosine starts at the peak
    assert rates[5] == pytest.approx(floor + (base - floor) * (1 + math.cos(math.pi / 6)) / 2)
    assert rates[9] == pytest.approx(floor + (base - floor) * (1 + math.cos(5 * math.pi / 6)) / 2)  # the last update
    assert rates[10:] == pytest.approx([floor] * 3)  # held at eta_min past the horizon
    assert all(a >= b for a, b in zip(rates[3:], rates[4:]))


@pytest.mark.parametrize("eta_min", [0.0, 0.002])
def test_warmup_equals_adamw_with_the_rate_set_by_hand(eta_min: float) -> None:
    from envs.training.schedules import warmup_cosine_lr

    a, b = _pair(1)
    ours = AdamWCosine([a], lr=0.05, betas=(0.9, 0.95), weight_decay=0.1, total_steps=8, warmup_steps=3,
                       eta_min=eta_min)  # fmt: skip
    theirs = torch.optim.AdamW([b], lr=0.05, betas=(0.9, 0.95), weight_decay=0.1)
    target = torch.randn(7, 3)
    for update in range(1, 11):
        theirs.param_groups[0]["lr"] = warmup_cosine_lr(0.05, update, 8, 3, eta_min)
        assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-12), update
        for w, opt in ((a, ours), (b, theirs)):
            opt.zero_grad()
            ((w - target) ** 4).sum().backward()
            opt.step()
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert ours.param_groups[0]["lr"] == pytest.approx(eta_min, abs=1e-15)


@pytest.mark.parametrize("warmup", [-1, 5, 6, 1.5, True])
def test_bad_warmup_is_refused(warmup: object) -> None:
    with pytest.raises(ValueError, match=r"warmup_steps must be an integer in \[0, total_steps\) = \[0, 5\)"):
        AdamWCosine([torch.zeros(1, requires_grad=True)], total_steps=5, warmup_steps=warmup)  # type: ignore[arg-type]


def test_functional_twin_with_warmup_matches_torch_row_by_row() -> None:
    from metaopt.compare.runner import RunSpec, run_batched, run_plain

    task = envs.make_task("tabular_mlp", dataset="wine", dtype=torch.float64)
    options = {"warmup_steps": 6, "betas": (0.9, 0.95), "weight_decay": 0.1}
    runs = [RunSpec(0, 0.003), RunSpec(1, 0.03)]
    twin = functional_from_spec(get_optimizer_spec("adamw_cosine"), options)
    assert isinstance(twin, FunctionalAdamWCosine) and twin.warmup_steps == 6
    batched = run_batched(task, runs, 20, twin)
    for run, result in zip(runs, batched):
        plain = run_plain(task, run, 20, "adamw_cosine", options)
        assert result.losses == pytest.approx(plain.losses, rel=1e-9, abs=1e-12)
        assert result.eval_loss == pytest.approx(plain.eval_loss, rel=1e-9)
    no_warmup = run_plain(task, runs[1], 20, "adamw_cosine", {**options, "warmup_steps": 0})
    assert batched[1].losses[2] != pytest.approx(no_warmup.losses[2], rel=1e-6)  # the warmup is really applied
