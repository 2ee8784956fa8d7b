"""The stacked meta-batch (``truncated_backprop`` with ``optimizees: stack``) gives the per-optimizee loop's results.

Both paths run in float32 from the same optimizees; the stacked one evaluates same-shape optimizees with one
vmapped (batched matrix product) call and steps every coordinate of the meta-batch with one rule call, so only the
rounding differs: the meta-gradients agree to 2e-7 (``mlp``) and 2e-6 (``tiny``) of their largest entry, measured,
checked at rtol 1e-5 over three truncations (the optimizees, rule states and batch streams carried from one to the
next must agree too, or later truncations drift apart). A wrong implementation fails them: the mutation pass's 23
mutants of the stacked path (an optimizee stepped with another's parameters, a rule state not carried, a member's
loss not divided by the meta-batch, the rule reading detached parameters, two gradient factors stacked as one, ...)
are all killed here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import envs
from envs.task import Task
from metaopt.inner import InnerState, start_episode
from metaopt.inner.stacked import _TaskLoss, stack_key, unroll_many
from metaopt.objectives import ObjectiveConfig, make_objective
from metaopt.outer import EstimatorSetup, MetaGradient, TruncatedBackprop, truncated_backprop
from metaopt.outer.truncated_backprop import TruncatedBackpropConfig
from metaopt.rules import LearnedRule, make_rule
from metaopt.rules.base import MAX_LAYOUTS
from metaopt.training.augment import reparameterize_weights, rescale_gradients
from tests.metaopt.training.test_family import assert_resumes_bit_for_bit

T, TRUNCATIONS, RTOL = 5, 3, 1e-5


def digits(width: int = 12, depth: int = 1, **options: object) -> Task:
    return envs.make_task("digits_mlp", width=width, depth=depth, valid_size=200, **options)


def rule_named(name: str) -> LearnedRule:
    torch.manual_seed(0)
    options: dict[str, object] = {"learned_tensors": "all"} if name.startswith("tiny") else {}
    if name == "tiny-scheduler":  # a global factor per model (the shipped recipe's rule adds orthogonalization)
        name, options = "tiny", {**options, "scheduler": True}
    elif name == "tiny-recipe":  # the shipped recipe's rule: the scheduler and orthogonalized matrices
        name, options = "tiny", {**options, "scheduler": True, "orthogonalize": True}
    rule = make_rule(name, options)
    with torch.no_grad():  # away from the near-zero start, so every weight's meta-gradient is well above rounding
        for weight in rule.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    return rule


def meta_batch(tasks: list[Task], rule: LearnedRule, held_out: bool) -> list[InnerState]:
    return [start_episode(task, 10 + slot, rule, held_out=held_out) for slot, task in enumerate(tasks)]


def estimates(how: str, rule: LearnedRule, inners: list[InnerState], objective: str, second_order: bool = False,
              truncations: int = TRUNCATIONS) -> list[MetaGradient]:  # fmt: skip
    setup = EstimatorSetup(T, make_objective(ObjectiveConfig(objective)), second_order=second_order)
    estimator = TruncatedBackprop(TruncatedBackpropConfig(optimizees=how), setup)
    return [estimator.estimate(rule, inners, meta_step=step) for step in range(truncations)]


def assert_same(stacked: list[MetaGradient], looped: list[MetaGradient], rtol: float = RTOL) -> None:
    for a, b in zip(stacked, looped, strict=True):
        for ga, gb in zip(a.grads, b.grads, strict=True):
            if gb is None:  # a weight the rule does not use in this setting (the tiny rule's AdamW scale)
                assert ga is None
                continue
            assert ga is not None and gb.abs().max() > 1e-9  # a meta-gradient there is something to compare
            torch.testing.assert_close(ga, gb, rtol=rtol, atol=rtol * float(gb.abs().max()))
        assert a.metrics == pytest.approx(b.metrics, rel=rtol)
        torch.testing.assert_close(
            a.histograms["updates"], b.histograms["updates"], rtol=rtol, atol=1e-7
        )  # differences of O(1) iterates


@pytest.mark.parametrize("rule_name", ["mlp", "tiny", "tiny-scheduler"])
@pytest.mark.parametrize("objective", ["loss", "eval_loss"])
def test_stacked_meta_gradient_equals_the_loop(rule_name: str, objective: str) -> None:
    task = digits()
    rule = rule_named(rule_name)
    held_out = objective == "eval_loss"
    looped_inners = meta_batch([task] * 3, rule, held_out)
    stacked_inners = meta_batch([task] * 3, rule, held_out)
    assert len({stack_key(inner) for inner in stacked_inners}) == 1  # one group of three: the vmapped path
    assert_same(estimates("stack", rule, stacked_inners, objective), estimates("loop", rule, looped_inners, objective))
    for a, b in zip(stacked_inners, looped_inners):  # carried alike: parameters, steps, rule state, next batch
        assert a.step == b.step == T * TRUNCATIONS
        assert all(isinstance(p, torch.nn.Parameter) and p.grad_fn is None for p in a.model.parameters())  # put back
        for pa, pb in zip(a.model.parameters(), b.model.parameters()):  # after 15 steps: rounding has accumulated
            torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6)
        state_a, state_b = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
        assert state_a.keys() == state_b.keys()
        for index in state_a:
            for key in state_a[index]:
                torch.testing.assert_close(state_a[index][key], state_b[index][key], rtol=1e-4, atol=1e-9)
        assert a.next_batch is not None and b.next_batch is not None
        assert torch.equal(a.next_batch[0], b.next_batch[0])


@pytest.mark.parametrize("rule_name", ["mlp", "tiny-scheduler"])
def test_mixed_shapes_tasks_and_gradient_scales_stack_apart(rule_name: str) -> None:
    """Different widths, depths, a convnet and rescaled twins each form their own group; one rule call for all."""
    rule = rule_named(rule_name)
    narrow = digits(12)  # one task object, as the family's schedule builds once per drawn spec
    tasks = [narrow, digits(20, 2), narrow, envs.make_task("digits_cnn", channels=2, valid_size=200), narrow, narrow]

    def batch() -> list[InnerState]:
        inners = meta_batch(tasks, rule, held_out=False)
        rescale_gradients(inners[2], 0.5)  # same shapes as slots 0 and 5, other functions: groups of their own,
        rescale_gradients(inners[4], 3.0)  # and apart from each other (the same wrapper, another factor)
        return inners

    stacked, looped = batch(), batch()
    assert len({stack_key(inner) for inner in stacked}) == 5  # {0, 5} stacked, the others alone
    assert_same(
        estimates("stack", rule, stacked, "loss", truncations=2), estimates("loop", rule, looped, "loss", truncations=2)
    )


def test_layers_reparameterized_by_other_factors_stack_apart() -> None:
    """The factors are read by the forward pass, not stored as parameters: the model's printout must tell them apart,
    or the second optimizee would be evaluated with the first one's factors."""
    rule = rule_named("mlp")
    task = digits()

    def batch() -> list[InnerState]:
        inners = meta_batch([task] * 3, rule, held_out=False)
        reparameterize_weights(inners[0], [2.0, 0.5])
        reparameterize_weights(inners[1], [3.0, 1.5])
        reparameterize_weights(inners[2], [2.0, 0.5])
        return inners

    stacked, looped = batch(), batch()
    assert len({stack_key(inner) for inner in stacked}) == 2  # {0, 2} stacked, 1 alone
    assert_same(
        estimates("stack", rule, stacked, "loss", truncations=2), estimates("loop", rule, looped, "loss", truncations=2)
    )


def test_the_shipped_recipe_s_rule_stacks_in_float64() -> None:
    """The scheduler with orthogonalized matrices: in float32 the iterations amplify the two paths' rounding (the
    updates differ by up to 1e-6 where the scheduler alone stays at 1e-7), so it is checked in float64, over mixed
    shapes (groups of two, one and one) and a rescaled twin."""
    rule = rule_named("tiny-recipe").double()
    narrow = digits(12, dtype=torch.float64)
    tasks = [narrow, digits(20, 2, dtype=torch.float64), narrow, narrow]

    def batch() -> list[InnerState]:
        inners = meta_batch(tasks, rule, held_out=False)
        rescale_gradients(inners[2], 2.0)
        return inners

    stacked, looped = batch(), batch()
    assert len({stack_key(inner) for inner in stacked}) == 3
    assert_same(estimates("stack", rule, stacked, "loss", truncations=2),
                estimates("loop", rule, looped, "loss", truncations=2), rtol=1e-9)  # fmt: skip


def test_second_order_and_lstm() -> None:
    rule = rule_named("lstm")
    task = digits(8)
    stacked, looped = meta_batch([task] * 2, rule, False), meta_batch([task] * 2, rule, False)
    assert_same(estimates("stack", rule, stacked, "loss", second_order=True, truncations=2),
                estimates("loop", rule, looped, "loss", second_order=True, truncations=2))  # fmt: skip


def test_group_options_lr_and_weight_decay() -> None:
    """A group's lr and decoupled weight decay act as in the twin (meta-training leaves them at 1 and 0)."""
    rule = rule_named("mlp")
    task = digits(8)

    def batch() -> list[InnerState]:
        inners = meta_batch([task] * 2, rule, held_out=False)
        for inner in inners:
            inner.optimizer.param_groups[0].update(lr=0.5, weight_decay=0.3)
        return inners

    assert_same(estimates("stack", rule, batch(), "loss", truncations=2),
                estimates("loop", rule, batch(), "loss", truncations=2))  # fmt: skip


def test_which_rules_are_separable() -> None:
    """The rules whose steps are per coordinate or per tensor say so; place-dependent or global parts do not."""

    class Coupled(LearnedRule):
        Config = TruncatedBackpropConfig  # any dataclass: the rule has no options
        init_state = join = split = step = None  # type: ignore[assignment]

    assert not Coupled().separable and not Coupled().separable_by_model  # a rule that says nothing is not stacked
    with pytest.raises(ValueError, match="couples tensors"):
        Coupled().step_models(torch.zeros(1), None, [torch.zeros(1)], torch.zeros(1, dtype=torch.long))
    assert make_rule("mlp", {}).separable and make_rule("lstm", {}).separable
    assert make_rule("mlp", {}).separable_by_model and make_rule("lstm", {}).separable_by_model
    assert (
        make_rule("tiny", {"learned_tensors": "all"}).separable
        and make_rule("tiny", {"learned_tensors": "none"}).separable
    )
    scheduled = make_rule("tiny", {"scheduler": True})
    assert not scheduled.separable  # one global factor from every tensor's statistics ...
    assert scheduled.separable_by_model  # ... which is per model when the rule is told the models
    assert not make_rule("tiny", {"scheduler": True, "learned_tensors": "none"}).separable_by_model
    assert not make_rule("tiny", {"learned_tensors": "hidden"}).separable_by_model


def test_the_scheduler_steps_each_model_by_its_own_statistics() -> None:
    """``step_models`` over two models' tensors is each model's own ``step``; ``step`` over both mixes them."""
    rule = rule_named("tiny-scheduler").double()
    generator = torch.Generator().manual_seed(4)
    first = [
        torch.randn(6, 5, generator=generator, dtype=torch.float64),
        torch.randn(6, generator=generator, dtype=torch.float64),
    ]
    second = [torch.randn(3, 6, generator=generator, dtype=torch.float64)]
    both = first + second
    models = torch.tensor([0, 0, 1])
    states = [rule.join([rule.init_state(p) for p in ps]) for ps in (first, second)]
    joined = rule.join([rule.init_state(p) for p in both])
    mixed = rule.join([rule.init_state(p) for p in both])
    for step in range(3):
        scale = 1.0 if step < 2 else 100.0  # the second model's gradients grow: its own factor moves, not the first's
        grads = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in first]
        grads += [scale * torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in second]
        flat = [torch.cat([g.reshape(-1) for g in gs]) for gs in (grads[:2], grads[2:])]
        alone = []
        for k, (ps, g) in enumerate(zip((first, second), flat)):
            update, states[k] = rule.step(g, states[k], ps)
            alone.append(update)
        together, joined = rule.step_models(torch.cat(flat), joined, both, models)
        torch.testing.assert_close(together, torch.cat(alone), rtol=1e-12, atol=1e-14)
        globally, mixed = rule.step(torch.cat(flat), mixed, both)
    assert not torch.allclose(globally, torch.cat(alone))  # without the models, one factor from both


def test_a_rule_that_couples_tensors_runs_in_the_loop() -> None:
    """The tiny rule's hybrid (first and last matrices by place) is not separable: the loop's results, bit for bit."""
    torch.manual_seed(0)
    rule = make_rule("tiny", {"learned_tensors": "hidden"})
    assert not rule.separable
    task = digits(12, 2)
    stacked, looped = meta_batch([task] * 2, rule, False), meta_batch([task] * 2, rule, False)
    for a, b in zip(
        estimates("stack", rule, stacked, "loss", truncations=1), estimates("loop", rule, looped, "loss", truncations=1)
    ):
        for ga, gb in zip(a.grads, b.grads):
            assert (ga is None and gb is None) or torch.equal(ga, gb)
    with pytest.raises(ValueError, match="couples tensors"):
        unroll_many(stacked, rule, T)


def test_the_option_is_checked() -> None:
    with pytest.raises(ValueError, match="optimizees must be one of loop, stack"):
        TruncatedBackpropConfig(optimizees="vmap")
    assert copy.deepcopy(TruncatedBackpropConfig()).optimizees == "loop"  # the default keeps old runs bit for bit


@pytest.mark.parametrize("rule_name", ["mlp", "tiny"])
def test_a_rule_keeps_a_bounded_number_of_layouts(rule_name: str) -> None:
    """A stacked family meets a new list of shapes at most meta-steps: the rule's per-list constants stay bounded."""
    rule = rule_named(rule_name)
    for size in range(1, MAX_LAYOUTS + 4):
        params = [torch.randn(size, 3), torch.randn(size)]
        state = rule.join([rule.init_state(p) for p in params])
        with torch.no_grad():
            update, _ = rule.step(torch.randn(4 * size), state, params)
        assert torch.isfinite(update).all()
    layouts = rule._layouts  # type: ignore[attr-defined]
    assert len(layouts) == MAX_LAYOUTS
    assert ((torch.Size([MAX_LAYOUTS + 3, 3]), torch.Size([MAX_LAYOUTS + 3])), torch.float32, torch.device("cpu")) in [
        (tuple(torch.Size(s) for s in key[0]), key[1], key[2]) for key in layouts
    ]  # the newest is kept, the oldest went


def test_the_swapped_loss_equals_functional_call_tied_parameters_too() -> None:
    """The stacked path's loss swaps parameters into the modules; a model with tied weights goes through the tie."""

    class SumTask:
        def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            return (model(batch[0]) * batch[1]).sum()

    torch.manual_seed(0)
    for tied in (False, True):
        model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh(), torch.nn.Linear(3, 3))
        if tied:
            model[2].weight = model[0].weight
        params = {name: torch.randn_like(p) for name, p in model.named_parameters()}
        inputs, targets = torch.randn(5, 3), torch.randn(5, 3)
        swapped = _TaskLoss(SumTask(), model)(params, inputs, targets)  # type: ignore[arg-type]
        expected = torch.func.functional_call(model, params, (inputs,))
        torch.testing.assert_close(swapped, (expected * targets).sum(), rtol=0, atol=0)
        assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())


def test_a_stacked_family_run_trains_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    """Through ``metaopt train``: the stacked path with the family's sampling, start offsets and held-out objective."""
    family = "tasks=[{name: digits_mlp, options: {width: 6, valid_size: 200}, choices: {activation: [sigmoid, relu]}}]"
    common = [family, "task_sampling=random", "start_offset=3", "objective.name=eval_loss", "episodes=3",
              "meta_batch=3", "rule.name=mlp", "rule.options.hidden_size=4", "val_every=3", "val_seeds=1",
              "estimator.options.optimizees=stack"]  # fmt: skip
    a = assert_resumes_bit_for_bit(tmp_path, common)
    assert a["trainer"]["progress"]["meta_step"] == 3 * 2 and a["trainer"]["progress"]["skipped"] == 0


def test_the_scheduler_rule_takes_the_stacked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def spy(inners: list[InnerState], *args: object, **kwargs: object) -> object:
        calls.append(len(inners))
        return unroll_many(inners, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(truncated_backprop, "unroll_many", spy)
    rule = rule_named("tiny-scheduler")
    estimates("stack", rule, meta_batch([digits()] * 2, rule, False), "loss", truncations=1)
    assert calls == [2]
