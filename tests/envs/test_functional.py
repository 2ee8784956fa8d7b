"""The functional optimizers reproduce torch.optim, trajectory by trajectory, with torch's own defaults.

Tolerance: float64 and a relative 1e-10. The functional and the torch.optim updates are the same elementwise
operations in the same order; what differs is the gradient, computed for all runs by one vmapped kernel against one
autograd pass per run, whose float64 rounding (~1e-16) the dynamics amplify over the 30 steps by far less than 1e6.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
import torch
from torch.func import grad, vmap

from envs.training.functional import SGD, Adam, FunctionalOptimizer, Muon, RMSprop, functional_from_spec
from envs.training.muon import MuonAdamW
from envs.training.optim import OptimizerSpec, get_optimizer_spec

DIM, STEPS = 6, 30
LRS = [1e-3, 1e-2, 0.05]


def objective(theta: torch.Tensor) -> torch.Tensor:
    """A smooth non-quadratic function, so the gradient feeds back into the trajectory."""
    a = torch.linspace(0.5, 3.0, DIM, dtype=theta.dtype)
    return (a * (theta - 1.0) ** 2).sum() + 0.3 * torch.sin(3 * theta).sum() + 0.1 * (theta**4).sum()


def start() -> torch.Tensor:
    return torch.linspace(-1.5, 2.0, DIM, dtype=torch.float64)


def torch_trajectory(cls: type[torch.optim.Optimizer], lr: float, options: dict[str, Any]) -> torch.Tensor:
    theta = start().clone().requires_grad_(True)
    opt = cls([theta], lr=lr, **options)
    points = []
    for _ in range(STEPS):
        opt.zero_grad()
        objective(theta).backward()
        opt.step()
        points.append(theta.detach().clone())
    return torch.stack(points)


def functional_trajectories(optimizer: FunctionalOptimizer, lrs: list[float]) -> torch.Tensor:
    params = {"theta": start().expand(len(lrs), DIM).clone()}
    lr = torch.tensor(lrs, dtype=torch.float64)
    state = optimizer.init(params)
    gradient = vmap(grad(lambda p: objective(p["theta"])))
    points = []
    for step in range(1, STEPS + 1):
        params, state = optimizer.update(params, gradient(params), state, lr, step)
        points.append(params["theta"])
    return torch.stack(points, dim=1)  # (R, steps, DIM)


SETTINGS = [
    (torch.optim.SGD, {}),
    (torch.optim.SGD, {"weight_decay": 0.1}),
    (torch.optim.SGD, {"momentum": 0.9}),
    (torch.optim.SGD, {"momentum": 0.5, "dampening": 0.3, "weight_decay": 0.05}),
    (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    (torch.optim.RMSprop, {}),
    (torch.optim.RMSprop, {"alpha": 0.9, "eps": 1e-3, "weight_decay": 0.1}),
    (torch.optim.RMSprop, {"momentum": 0.8}),
    (torch.optim.RMSprop, {"centered": True, "momentum": 0.5}),
    (torch.optim.Adam, {}),
    (torch.optim.Adam, {"betas": (0.5, 0.9), "eps": 1e-4, "weight_decay": 0.1}),
    (torch.optim.Adam, {"amsgrad": True}),
    (torch.optim.AdamW, {}),
    (torch.optim.AdamW, {"weight_decay": 0.3, "amsgrad": True}),
]


@pytest.mark.parametrize(("cls", "options"), SETTINGS, ids=lambda v: getattr(v, "__name__", None) or str(v))
def test_functional_matches_torch_optim_trajectory_by_trajectory(
    cls: type[torch.optim.Optimizer], options: dict[str, Any]
) -> None:
    twin = functional_from_spec(OptimizerSpec("x", cls, options))
    assert twin is not None
    batched = functional_trajectories(twin, LRS)
    for i, lr in enumerate(LRS):
        expected = torch_trajectory(cls, lr, options)
        assert torch.isfinite(expected).all()
        torch.testing.assert_close(batched[i], expected, rtol=1e-10, atol=1e-12, msg=f"lr={lr}")
    assert not torch.allclose(batched[0], batched[-1])  # each run really used its own learning rate


@pytest.mark.parametrize(
    ("twin", "cls"),
    [(SGD, torch.optim.SGD), (RMSprop, torch.optim.RMSprop), (Adam, torch.optim.Adam), (Muon, MuonAdamW)],
)
def test_twin_defaults_are_torch_defaults(twin: type, cls: type) -> None:
    signature = inspect.signature(cls.__init__).parameters
    for f in dataclasses.fields(twin):
        if f.name in signature:
            assert f.default == signature[f.name].default, f.name


def test_registry_names_map_to_their_twins() -> None:
    assert functional_from_spec(get_optimizer_spec("sgd")) == SGD()
    assert functional_from_spec(get_optimizer_spec("momentum")) == SGD(momentum=0.9)
    assert functional_from_spec(get_optimizer_spec("nesterov")) == SGD(momentum=0.9, nesterov=True)
    assert functional_from_spec(get_optimizer_spec("rmsprop")) == RMSprop()
    assert functional_from_spec(get_optimizer_spec("adam")) == Adam()
    assert functional_from_spec(get_optimizer_spec("adam"), {"betas": [0.8, 0.99]}) == Adam(betas=(0.8, 0.99))
    assert functional_from_spec(get_optimizer_spec("muon")) == Muon()
    assert functional_from_spec(get_optimizer_spec("muon"), {"matrices": "hidden"}) == Muon(matrices="hidden")


class MySGD(torch.optim.SGD):
    """A subclass may change step(): it must not get SGD's twin."""


@pytest.mark.parametrize(
    "spec",
    [
        OptimizerSpec("sub", MySGD),
        OptimizerSpec("max", torch.optim.Adam, {"maximize": True}),
        OptimizerSpec("lbfgs", torch.optim.LBFGS),
        OptimizerSpec("fn", lambda params, lr=0.1: torch.optim.SGD(params, lr=lr)),
    ],
    ids=lambda s: s.name,
)
def test_optimizers_without_a_twin_get_none(spec: OptimizerSpec) -> None:
    assert functional_from_spec(spec) is None
