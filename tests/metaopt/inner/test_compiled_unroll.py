"""The compiled unroll (``truncated_backprop``'s ``compile``) is the ``higher`` unroll's arithmetic.

With the ``eager`` backend, dynamo traces the functional step and runs it with the eager kernels: trajectories,
meta-gradients, and the optimizees and rule states carried into the next truncation equal ``higher``'s bit for bit,
so any difference is a wrong implementation. One test compiles with inductor, the default, and checks the same
quantities to float32 rounding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import envs
from envs.errors import InvalidValue
from metaopt import LearnedOptimizer
from metaopt.cli import main
from metaopt.commands.train import run_train
from metaopt.inner import InnerState, Trajectory, start_episode, unroll
from metaopt.inner.compiled import CompiledUnroll
from metaopt.objectives import ObjectiveConfig, make_objective
from metaopt.outer import EstimatorSetup, TruncatedBackprop
from metaopt.outer.truncated_backprop import TruncatedBackpropConfig
from metaopt.rules import LearnedRule, make_rule
from metaopt.training.augment import reparameterize_weights
from tests.metaopt.training.test_family import assert_resumes_bit_for_bit, config

T = 4


def rule_named(name: str) -> LearnedRule:
    torch.manual_seed(0)
    options: dict[str, object] = {}
    if name == "tiny-recipe":  # the shipped recipe's rule: scheduler, orthogonalized matrices, step-size adaptation
        name, options = "tiny", {"scheduler": True, "orthogonalize": True, "adapt_rate": 0.03}
    rule = make_rule(name, options)
    with torch.no_grad():  # away from the near-zero start, so every weight's meta-gradient is well above rounding
        for weight in rule.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    return rule


def digits(width: int = 8, depth: int = 2) -> envs.Task:
    return envs.make_task("digits_mlp", width=width, depth=depth, activation="tanh", valid_size=200)


def meta_gradient(trajectory: Trajectory, rule: LearnedRule) -> list[Tensor]:
    loss = trajectory.losses.sum()
    if trajectory.valid_losses is not None:
        loss = loss + trajectory.valid_losses.sum()
    weights = [w for w in rule.parameters() if w.requires_grad]
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads)]


def assert_same_truncation(a: Trajectory, b: Trajectory, rule: LearnedRule, exact: bool = True) -> None:
    pairs = [(a.losses, b.losses), (a.iterates, b.iterates), *zip(meta_gradient(a, rule), meta_gradient(b, rule))]
    if a.valid_losses is not None or b.valid_losses is not None:
        assert a.valid_losses is not None and b.valid_losses is not None
        pairs.append((a.valid_losses, b.valid_losses))
    assert a.start_step == b.start_step
    for x, y in pairs:
        if exact:
            assert torch.equal(x, y)
        else:
            torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-4, atol=1e-4 * float(y.detach().abs().max()))


def assert_same_optimizee(a: InnerState, b: InnerState, exact: bool = True) -> None:
    """Parameters, rule state, step and next batch carried alike (the next truncation starts from them)."""
    assert a.step == b.step
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert isinstance(pa, nn.Parameter) and pa.grad_fn is None  # written back in place, off the graph
        assert torch.equal(pa, pb) if exact else torch.allclose(pa, pb, rtol=1e-4, atol=1e-5)
    state_a, state_b = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert state_a.keys() == state_b.keys() and state_a
    for index in state_a:
        assert state_a[index].keys() == state_b[index].keys()
        for key, value in state_a[index].items():
            other = state_b[index][key]
            if isinstance(value, Tensor):
                assert other.grad_fn is None
                assert torch.equal(value, other) if exact else torch.allclose(value, other, rtol=1e-4, atol=1e-5)
    assert a.next_batch is not None and b.next_batch is not None and torch.equal(a.next_batch[0], b.next_batch[0])


@pytest.mark.parametrize(
    ("rule_name", "first_order"),
    [("tiny-recipe", False), ("tiny-recipe", True), ("lstm", False), ("lstm", True), ("mlp", False), ("mlp", True)],
)
def test_the_compiled_unroll_is_higher_s_arithmetic(rule_name: str, first_order: bool) -> None:
    rule = rule_named(rule_name)
    task = digits()
    reference, compiled = (start_episode(task, 3, rule, held_out=True) for _ in range(2))
    unrolls = CompiledUnroll(rule, backend="eager")
    for _ in range(2):  # the second truncation starts from what the first carried
        expected = unroll(reference, T, first_order=first_order)
        got = unrolls.unroll(compiled, T, first_order=first_order)
        assert_same_truncation(got, expected, rule)
        assert_same_optimizee(compiled, reference)
    assert all(found.step is not None for found in unrolls._steps.values())  # it did compile


def test_the_first_and_second_order_steps_are_compiled_apart() -> None:
    rule = rule_named("lstm")
    task = digits()
    reference, compiled = (start_episode(task, 3, rule) for _ in range(2))
    unrolls = CompiledUnroll(rule, backend="eager")
    for first_order in (False, True, False):
        assert_same_truncation(
            unrolls.unroll(compiled, T, first_order=first_order), unroll(reference, T, first_order=first_order), rule
        )
    assert len(unrolls._steps) == 2


def optimizee_with_groups(task: envs.Task, rule: LearnedRule, seed: int) -> InnerState:
    """An optimizee whose optimizer lists the parameters in another order than the model, with two groups' options."""
    problem = task.instance(seed)
    model = problem.init_model(seed)
    params = list(model.parameters())
    groups = [{"params": params[::-2], "lr": 0.5, "weight_decay": 0.1}, {"params": params[-2::-2]}]
    optimizer = LearnedOptimizer(groups, rule=rule)
    return InnerState(problem, model, optimizer, problem.batches(seed))


def test_group_options_and_the_optimizer_s_order_are_kept() -> None:
    rule = rule_named("tiny-recipe")
    task = digits()
    reference, compiled = (optimizee_with_groups(task, rule, 5) for _ in range(2))
    unrolls = CompiledUnroll(rule, backend="eager")
    for _ in range(2):
        assert_same_truncation(unrolls.unroll(compiled, T), unroll(reference, T), rule)
        assert_same_optimizee(compiled, reference)


class _Buffered(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.register_buffer("scale", torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x) * self.scale


class _Unused(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.unused = nn.Parameter(torch.ones(3))

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x)


@pytest.mark.parametrize("case", ["buffer", "unused parameter", "part of the model"])
def test_what_it_does_not_compile_runs_the_higher_unroll(case: str) -> None:
    rule = rule_named("lstm")
    task = digits()

    def optimizee() -> InnerState:
        torch.manual_seed(1)
        model = task.init_model(2)
        if case == "buffer":
            model = _Buffered(model)
        elif case == "unused parameter":
            model = _Unused(model)
        params = list(model.parameters())[1:] if case == "part of the model" else model.parameters()
        return InnerState(task, model, LearnedOptimizer(params, rule=rule), task.batches(2))

    reference, compiled = optimizee(), optimizee()
    unrolls = CompiledUnroll(rule, backend="eager")
    assert_same_truncation(unrolls.unroll(compiled, T), unroll(reference, T), rule)
    [found] = unrolls._steps.values()
    assert found.step is None  # higher ran it
    for pa, pb in zip(compiled.model.parameters(), reference.model.parameters()):
        assert torch.equal(pa, pb)
    assert compiled.step == reference.step == T


def test_a_problem_family_s_optimizees_run_the_higher_unroll() -> None:
    """Each quadratic is a task object of its own (``instance`` draws a new problem): it would compile per optimizee."""
    rule = rule_named("lstm")
    task = envs.make_task("quadratic", dim=4)
    reference, compiled = (start_episode(task, 7, rule) for _ in range(2))
    unrolls = CompiledUnroll(rule, backend="eager")
    assert_same_truncation(unrolls.unroll(compiled, T), unroll(reference, T), rule)
    [found] = unrolls._steps.values()
    assert found.step is None


def test_reparameterized_optimizees_compile_apart() -> None:
    """The factors of weight reparameterization are read by the forward pass, not stored as parameters: two factors
    are two structures, each the ``higher`` unroll's arithmetic."""
    rule = rule_named("lstm")
    task = digits(8, 1)

    def pair() -> list[InnerState]:
        inners = [start_episode(task, seed, rule) for seed in (1, 2)]
        reparameterize_weights(inners[0], [2.0, 0.5])
        reparameterize_weights(inners[1], [3.0, 1.5])
        return inners

    compiled, reference = pair(), pair()
    unrolls = CompiledUnroll(rule, backend="eager")
    for a, b in zip(compiled, reference):
        assert_same_truncation(unrolls.unroll(a, T), unroll(b, T), rule)
    assert len(unrolls._steps) == 2


def test_one_compiled_step_per_structure() -> None:
    rule = rule_named("lstm")
    narrow, wide = digits(8), digits(12)
    inners = [start_episode(task, seed, rule) for seed, task in enumerate([narrow, narrow, wide, narrow])]
    unrolls = CompiledUnroll(rule, backend="eager")
    for _ in range(2):
        for inner in inners:
            unrolls.unroll(inner, 2, first_order=True)
    assert len(unrolls._steps) == 2
    with pytest.raises(ValueError, match="does not use"):
        unrolls.unroll(start_episode(narrow, 9, rule_named("lstm")), 2)
    with pytest.raises(ValueError, match="backend must be one of"):
        CompiledUnroll(rule, backend="tvm")


def estimator(**options: object) -> TruncatedBackprop:
    setup = EstimatorSetup(T, make_objective(ObjectiveConfig("eval_loss")))
    return TruncatedBackprop(TruncatedBackpropConfig(**options), setup)  # type: ignore[arg-type]


def test_truncated_backprop_with_compile_gives_the_loop_s_estimates() -> None:
    rule = rule_named("tiny-recipe")
    narrow = digits(8)  # one task object, as the family's schedule builds once per drawn spec
    tasks = [narrow, digits(12, 1), narrow]
    looped = [start_episode(task, 10 + i, rule, held_out=True) for i, task in enumerate(tasks)]
    compiled = [start_episode(task, 10 + i, rule, held_out=True) for i, task in enumerate(tasks)]
    loop, compiling = estimator(), estimator(compile=True, compile_backend="eager")
    for meta_step in range(2):
        a = compiling.estimate(rule, compiled, meta_step=meta_step)
        b = loop.estimate(rule, looped, meta_step=meta_step)
        for ga, gb in zip(a.grads, b.grads, strict=True):
            assert (ga is None and gb is None) or (ga is not None and gb is not None and torch.equal(ga, gb))
        assert a.metrics == b.metrics
    assert compiling._compiled is not None and len(compiling._compiled._steps) == 2


def test_compile_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidValue, match="compile_backend"):
        TruncatedBackpropConfig(compile=True, compile_backend="tvm")
    with pytest.raises(InvalidValue, match="optimizees: loop"):
        TruncatedBackpropConfig(optimizees="stack", compile=True)
    args = ["train", "metaopt/quadratic.yaml", "estimator.options.optimizees=stack", "estimator.options.compile=true"]
    assert main(args) == 2
    assert "compile" in capsys.readouterr().err


def test_metaopt_train_with_compile_resumes_bit_for_bit_and_equals_the_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    family = "tasks=[{name: digits_mlp, options: {width: 6, valid_size: 200}, choices: {activation: [tanh, relu]}}]"
    common = [family, "task_sampling=random", "start_offset=3", "objective.name=eval_loss", "episodes=3"]
    common += ["rule.name=tiny", "val_every=3", "val_seeds=1"]
    compiled = assert_resumes_bit_for_bit(
        tmp_path / "compiled", [*common, "estimator.options.compile=true", "estimator.options.compile_backend=eager"]
    )
    assert "compile: each optimizee structure compiles on its first truncation" in capsys.readouterr().out
    run_train(config(tmp_path / "loop", *common))
    assert "compile:" not in capsys.readouterr().out
    looped = torch.load(tmp_path / "loop" / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert compiled["state_dict"].keys() == looped["state_dict"].keys()
    assert all(torch.equal(compiled["state_dict"][k], looped["state_dict"][k]) for k in looped["state_dict"])


def test_inductor_compiles_the_step_to_float32_rounding() -> None:
    rule = rule_named("lstm")
    task = digits(6, 1)
    reference, compiled = (start_episode(task, 4, rule, held_out=True) for _ in range(2))
    unrolls = CompiledUnroll(rule)  # the default backend, inductor
    for _ in range(2):
        expected = unroll(reference, T, first_order=True)
        assert_same_truncation(unrolls.unroll(compiled, T, first_order=True), expected, rule, exact=False)
        assert_same_optimizee(compiled, reference, exact=False)
        with torch.no_grad():  # as the meta-optimizer moves them, in place: the compiled step must read the new weights
            for weight in rule.parameters():
                weight.add_(0.1 * torch.randn_like(weight))
