"""LearnedOptimizer keeps the rule's joined state between steps, and that changes nothing a user can observe.

Every test compares the optimizer that keeps its joined state against one that cannot: a fresh optimizer per step,
loaded with the previous step's ``state_dict()``, so it joins the per-parameter pieces at every step (the path from
before the shell kept anything). Parameters and state must agree bit for bit, whatever happens between steps: a
``state_dict()`` round trip, a read or a change of ``optimizer.state``, a gradient that becomes None, a group added,
a state loaded over the kept one.
"""

from __future__ import annotations

import copy
import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from metaopt import LearnedOptimizer
from metaopt.rules import LearnedRule, make_rule

Groups = Callable[[nn.Module], list[dict[str, Any]]]


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


def rule(name: str) -> LearnedRule:
    torch.manual_seed(1)
    learned = make_rule(name, {})
    if name == "mlp":
        with torch.no_grad():
            learned.readout.weight.mul_(300)  # steps well above rounding: a wrong state shows in the parameters
    return learned


def one_group(m: nn.Module) -> list[dict[str, Any]]:
    return [{"params": list(m.parameters())}]


def two_groups(m: nn.Module) -> list[dict[str, Any]]:
    first, second = m[0], m[2]  # type: ignore[index]
    return [{"params": list(first.parameters()), "lr": 0.5}, {"params": list(second.parameters()), "weight_decay": 0.1}]


def batch(index: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(index)
    return torch.randn(8, 5, generator=generator), torch.randint(0, 3, (8,), generator=generator)


def backward(m: nn.Module, index: int) -> None:
    inputs, targets = batch(index)
    for p in m.parameters():
        p.grad = None
    nn.functional.cross_entropy(m(inputs), targets).backward()


def state_of(opt: LearnedOptimizer) -> dict[int, dict[str, Tensor]]:
    """A deep copy of the optimizer's per-parameter state, by parameter index (what state_dict() saves)."""
    return copy.deepcopy(opt.state_dict()["state"])


def assert_same(a: nn.Module, b: nn.Module, state_a: dict, state_b: dict) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert state_a.keys() == state_b.keys()
    for index, piece in state_a.items():
        assert piece.keys() == state_b[index].keys()
        for key, value in piece.items():
            assert torch.equal(value, state_b[index][key]), (index, key)


class Reloaded:
    """The reference: a new optimizer at every step, loaded with the state_dict the previous step left."""

    def __init__(self, m: nn.Module, learned: LearnedRule, groups: Groups):
        self.model, self.rule, self.groups = m, learned, groups
        self.saved = LearnedOptimizer(groups(m), rule=learned).state_dict()

    def step(self) -> None:
        opt = LearnedOptimizer(self.groups(self.model), rule=self.rule)
        opt.load_state_dict(copy.deepcopy(self.saved))
        opt.step()
        self.saved = copy.deepcopy(opt.state_dict())


@pytest.mark.parametrize("name", ["mlp", "lstm"])
@pytest.mark.parametrize("groups", [one_group, two_groups], ids=["one group", "two groups"])
def test_the_kept_state_is_bit_identical_to_joining_the_pieces_every_step(name: str, groups: Groups) -> None:
    learned = rule(name)
    kept_model, reloaded_model = model(), model()
    kept = LearnedOptimizer(groups(kept_model), rule=learned)
    reloaded = Reloaded(reloaded_model, learned, groups)
    joins = 0
    join = learned.join

    def counting_join(pieces: Any) -> Any:
        nonlocal joins
        joins += 1
        return join(pieces)

    learned.join = counting_join  # type: ignore[method-assign]
    for index in range(8):
        backward(kept_model, index)
        backward(reloaded_model, index)
        kept.step()
        before = joins
        reloaded.step()
        joins = before  # count only the kept optimizer's joins
    assert joins == 1  # it joined once, at its first step
    assert_same(kept_model, reloaded_model, state_of(kept), reloaded.saved["state"])
    assert not torch.equal(next(kept_model.parameters()), next(model().parameters()))  # it did move


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_a_state_dict_round_trip_mid_training_continues_as_the_uninterrupted_run(name: str) -> None:
    learned = rule(name)
    through, interrupted = model(), model()
    opt = LearnedOptimizer(through.parameters(), rule=learned)
    other = LearnedOptimizer(interrupted.parameters(), rule=learned)
    for index in range(3):
        for m, o in ((through, opt), (interrupted, other)):
            backward(m, index)
            o.step()
    saved = copy.deepcopy(other.state_dict())
    other = LearnedOptimizer(interrupted.parameters(), rule=learned)
    other.load_state_dict(saved)
    for index in range(3, 8):
        for m, o in ((through, opt), (interrupted, other)):
            backward(m, index)
            o.step()
        if index == 5:
            opt.state_dict()  # a read between steps, too, changes nothing
    assert_same(through, interrupted, state_of(opt), state_of(other))


def test_a_change_to_the_state_between_steps_reaches_the_next_step() -> None:
    learned = rule("mlp")
    changed, reference, plain = model(), model(), model()
    opt = LearnedOptimizer(changed.parameters(), rule=learned)
    for index in range(3):
        backward(changed, index)
        opt.step()
    unchanged = LearnedOptimizer(plain.parameters(), rule=learned)
    unchanged.load_state_dict(copy.deepcopy(opt.state_dict()))
    first, second = list(changed.parameters())[:2]
    opt.state[first]["momenta"] = torch.zeros_like(opt.state[first]["momenta"])  # replaced
    opt.state[second]["second_moment"].mul_(4.0)  # changed in place
    restored = LearnedOptimizer(reference.parameters(), rule=learned)
    restored.load_state_dict(copy.deepcopy(opt.state_dict()))
    for m in (reference, plain):
        m.load_state_dict(changed.state_dict())
    for m, o in ((changed, opt), (reference, restored), (plain, unchanged)):
        backward(m, 3)
        o.step()
    assert_same(changed, reference, state_of(opt), state_of(restored))
    for p, q in zip(list(changed.parameters())[:2], list(plain.parameters())[:2]):
        assert not torch.equal(p, q)  # the change mattered


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_a_parameter_whose_gradient_becomes_none_keeps_its_state_and_rejoins(name: str) -> None:
    learned = rule(name)
    kept_model, reloaded_model = model(), model()
    kept = LearnedOptimizer(kept_model.parameters(), rule=learned)
    reloaded = Reloaded(reloaded_model, learned, one_group)
    frozen = 2  # the second layer's weight skips steps 3 and 4
    for index in range(7):
        for m in (kept_model, reloaded_model):
            backward(m, index)
            if index in (3, 4):
                list(m.parameters())[frozen].grad = None
        kept.step()
        reloaded.step()
        if index == 4 and name == "mlp":
            assert state_of(kept)[frozen]["step"].item() == 3  # no step counted while it had no gradient
    assert_same(kept_model, reloaded_model, state_of(kept), reloaded.saved["state"])


def test_a_group_added_after_some_steps_starts_from_the_initial_state() -> None:
    learned = rule("mlp")
    kept_model, reloaded_model = model(), model()
    kept = LearnedOptimizer(kept_model[0].parameters(), rule=learned)  # type: ignore[index]
    reloaded = Reloaded(reloaded_model, learned, lambda m: [{"params": list(m[0].parameters())}])  # type: ignore[index]
    for index in range(3):
        backward(kept_model, index)
        backward(reloaded_model, index)
        kept.step()
        reloaded.step()
    kept.add_param_group({"params": list(kept_model[2].parameters()), "lr": 0.5})  # type: ignore[index]
    reloaded.groups = lambda m: [
        {"params": list(m[0].parameters())},  # type: ignore[index]
        {"params": list(m[2].parameters()), "lr": 0.5},  # type: ignore[index]
    ]
    saved = reloaded.saved
    saved["param_groups"].append({**saved["param_groups"][0], "params": [2, 3], "lr": 0.5})
    for index in range(3, 6):
        backward(kept_model, index)
        backward(reloaded_model, index)
        kept.step()
        reloaded.step()
    state = state_of(kept)
    assert state[0]["step"].item() == 6 and state[2]["step"].item() == 3
    assert_same(kept_model, reloaded_model, state, reloaded.saved["state"])


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_load_state_dict_replaces_the_kept_state(name: str) -> None:
    learned = rule(name)
    kept_model, fresh_model = model(), model()
    kept = LearnedOptimizer(kept_model.parameters(), rule=learned)
    for index in range(2):
        backward(kept_model, index)
        kept.step()
    saved = copy.deepcopy(kept.state_dict())
    fresh_model.load_state_dict(kept_model.state_dict())
    for index in range(2, 5):  # the kept state moves on past the saved one
        backward(kept_model, index)
        kept.step()
    kept.load_state_dict(copy.deepcopy(saved))
    kept_model.load_state_dict(fresh_model.state_dict())
    fresh = LearnedOptimizer(fresh_model.parameters(), rule=learned)
    fresh.load_state_dict(copy.deepcopy(saved))
    for index in range(5, 8):
        for m, o in ((kept_model, kept), (fresh_model, fresh)):
            backward(m, index)
            o.step()
    assert_same(kept_model, fresh_model, state_of(kept), state_of(fresh))


def test_the_state_follows_the_parameter_not_its_shape() -> None:
    learned = rule("mlp")
    torch.manual_seed(0)
    kept_model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3))
    reloaded_model = copy.deepcopy(kept_model)
    kept = LearnedOptimizer(kept_model.parameters(), rule=learned)
    reloaded = Reloaded(reloaded_model, learned, one_group)
    for index in range(6):  # the two 4x4 layers take turns: the same shapes, other tensors
        resting = 0 if index % 2 else 2
        for m in (kept_model, reloaded_model):
            inputs, targets = batch(index)
            for p in m.parameters():
                p.grad = None
            nn.functional.cross_entropy(m(inputs[:, :4]), targets).backward()
            for p in m[resting].parameters():  # type: ignore[index]
                p.grad = None
        kept.step()
        reloaded.step()
    assert_same(kept_model, reloaded_model, state_of(kept), reloaded.saved["state"])


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_the_optimizer_holds_one_copy_of_the_state(name: str) -> None:
    m = model()
    opt = LearnedOptimizer(m.parameters(), rule=rule(name))
    backward(m, 0)
    opt.step()
    saved = opt.state_dict()
    pieces = [weakref.ref(value) for piece in saved["state"].values() for value in piece.values()]
    del saved
    backward(m, 1)
    opt.step()  # the pieces read out are stale now: the optimizer must not keep them alive beside its joined state
    gc.collect()
    assert all(piece() is None for piece in pieces)
    assert state_of(opt)[0].keys()  # and they come back on the next read


def test_a_rule_converted_to_another_dtype_between_steps_gets_its_state_converted() -> None:
    learned = rule("mlp")
    kept_model, joining_model = model(), model()
    kept = LearnedOptimizer(kept_model.parameters(), rule=learned)
    joining = LearnedOptimizer(joining_model.parameters(), rule=learned)  # a read after every step: joins every step
    for index in range(5):
        if index == 2:
            learned.double()  # in place: the same rule object, now float64
        for m, o in ((kept_model, kept), (joining_model, joining)):
            backward(m, index)
            o.step()
        assert joining.state  # (a state_dict round trip would not do: it casts the state to the parameters' dtype)
    state = state_of(kept)
    assert state[0]["momenta"].dtype == torch.float64
    assert_same(kept_model, joining_model, state, state_of(joining))
