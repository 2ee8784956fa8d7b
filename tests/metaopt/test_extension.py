"""A new learned rule and a new estimator are one class and one registration line each, and run through
``metaopt train`` end to end; bad names and options get one message naming the choices."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import higher
import pytest
import torch
from torch import Tensor, nn

import envs
from metaopt import LearnedOptimizer, LearnedRule, load_net, register_estimator, register_rule, unroll
from metaopt.checkpoint import load_checkpoint
from metaopt.cli import main
from metaopt.inner import InnerState, advance, start_episode
from metaopt.outer import Estimator, MetaGradient
from metaopt.rules import ParamState
from tests.metaopt.sizes import TINY_TRAIN


@dataclass
class LogLRConfig:
    """Options of the trivial rule."""

    lr: float = 0.05
    """Initial learning rate."""


class LogLRSGD(LearnedRule):
    """Plain SGD whose log learning rate is the one meta-parameter; no state."""

    Config = LogLRConfig

    def __init__(self, config: LogLRConfig | None = None):
        super().__init__(config)
        self.log_lr = nn.Parameter(torch.tensor(math.log(self.config.lr)))

    def init_state(self, param: Tensor) -> ParamState:
        return {}

    def join(self, pieces: Sequence[ParamState]) -> tuple[()]:
        return ()

    def split(self, state: tuple[()], params: Sequence[Tensor]) -> list[ParamState]:
        return [{} for _ in params]

    def step(self, grads: Tensor, state: tuple[()], params: Sequence[Tensor]) -> tuple[Tensor, tuple[()]]:
        return -self.log_lr.exp() * grads, state


@dataclass
class ConstantConfig:
    """Options of the trivial estimator."""

    direction: float = 1.0
    """The sign of the gradient it returns."""


class ConstantGradient(Estimator):
    """Advances the optimizees without a meta-graph and returns ``direction`` for every weight."""

    Config = ConstantConfig

    def estimate(self, rule: LearnedRule, inners: Sequence[InnerState], *, meta_step: int) -> MetaGradient:
        finals = [float(advance(inner, self.setup.truncation)[-1]) for inner in inners]
        grads = tuple(torch.full_like(w, self.config.direction) for w in rule.parameters())
        return MetaGradient(grads, {"loss": sum(finals) / len(finals), "final_loss": sum(finals) / len(finals)})


register_rule("log_lr_sgd", LogLRSGD)
register_estimator("constant", ConstantGradient)


def quadratic() -> tuple[envs.Task, nn.Module]:
    task = envs.make_task("quadratic", dim=4, dtype="float64").instance(3)
    return task, task.init_model(3)


def test_the_trivial_rule_in_the_optimizer_shell_is_sgd() -> None:
    rule = LogLRSGD(LogLRConfig(lr=0.07)).double()
    (task, model), (_, reference) = quadratic(), quadratic()
    learned = LearnedOptimizer(model.parameters(), rule=rule)
    sgd = torch.optim.SGD(reference.parameters(), lr=float(rule.log_lr.exp()))  # 0.07 up to float32 rounding
    batches = task.batches(3)
    for _ in range(5):
        batch = next(batches)
        for m, opt in ((model, learned), (reference, sgd)):
            opt.zero_grad()
            task.loss(m, batch).backward()
            opt.step()
        for a, b in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_the_trivial_rule_meta_gradient_through_the_twin_matches_finite_differences() -> None:
    rule = LogLRSGD().double()
    task = envs.make_task("quadratic", dim=4, dtype="float64")

    def meta_loss() -> Tensor:
        return unroll(start_episode(task, 5, rule), 6, first_order=False).losses[1:].sum()

    (grad,) = torch.autograd.grad(meta_loss(), [rule.log_lr])
    eps, original = 1e-6, float(rule.log_lr)
    rule.log_lr.data.fill_(original + eps)  # .data: no autograd history; the unroll itself needs gradients
    plus = float(meta_loss())
    rule.log_lr.data.fill_(original - eps)
    minus = float(meta_loss())
    rule.log_lr.data.fill_(original)
    assert float(grad) == pytest.approx((plus - minus) / (2 * eps), rel=1e-6)
    model = task.instance(5).init_model(5)
    with higher.innerloop_ctx(model, LearnedOptimizer(model.parameters(), rule=rule)) as (_, diffopt):
        assert diffopt.rule is rule  # the twin shares the live rule


def test_a_registered_rule_meta_trains_through_the_command(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "metaopt/quadratic.yaml", *TINY_TRAIN, "episodes=4", "meta_lr=0.05", "rule=log_lr_sgd",
                 "rule.options={lr: 0.01}", f"out={out}"]) == 0  # fmt: skip
    payload = load_checkpoint(out / "checkpoints" / "last.pt")
    assert payload["rule"] == "log_lr_sgd" and payload["config"] == {"lr": 0.01}
    trained = load_net(out / "checkpoints" / "last.pt")
    assert isinstance(trained, LogLRSGD)
    assert float(trained.log_lr.exp()) > 0.01 * 1.1  # meta-training raised a too small learning rate
    assert payload["trainer"]["progress"]["meta_step"] == 4 * 2
    model = envs.make_task("quadratic", dim=4).init_model(0)
    assert isinstance(LearnedOptimizer(model.parameters(), checkpoint=out / "checkpoints" / "best.pt").rule, LogLRSGD)


def test_a_registered_estimator_trains_through_the_command_and_the_loop_applies_its_gradient(tmp_path: Path) -> None:
    out = tmp_path / "run"
    meta_lr, meta_steps = 0.01, 2 * 2
    assert main(["train", "metaopt/quadratic.yaml", *TINY_TRAIN, "episodes=2", f"meta_lr={meta_lr}", "rule=log_lr_sgd",
                 "estimator=constant", "estimator.options={direction: -1.0}", f"out={out}"]) == 0  # fmt: skip
    trained = load_net(out / "checkpoints" / "last.pt")
    assert isinstance(trained, LogLRSGD)
    # Adam on a constant gradient moves the weight by meta_lr per step, against the gradient's sign
    assert float(trained.log_lr) == pytest.approx(math.log(0.05) + meta_steps * meta_lr, rel=1e-4)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("rule=nope", "unknown rule 'nope'; valid rules: .*log_lr_sgd.*lstm"),
        ("estimator=nope", "unknown estimator 'nope'; valid estimators: .*constant.*truncated_backprop"),
        ("rule.options={lr: 0.1}", "rule 'lstm' has no option lr"),
        ("estimator.options={sigma: 1}", "estimator 'truncated_backprop' has no option sigma; its options: optimizees"),
    ],
)
def test_bad_rule_or_estimator_names_the_choices(override: str, match: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "metaopt/quadratic.yaml", override]) == 2
    assert re.search(match, capsys.readouterr().err)


def test_a_wrong_option_of_a_registered_rule_names_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "metaopt/quadratic.yaml", "rule=log_lr_sgd", "rule.options={rate: 0.1}"]) == 2
    assert "rule 'log_lr_sgd' has no option rate; its options: lr" in capsys.readouterr().err
