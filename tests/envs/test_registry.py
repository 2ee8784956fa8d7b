"""The one registry behind tasks, optimizers, learned rules, estimators, objectives and path finders."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from envs.task.registry import TASKS
from envs.tooling.registry import Registry
from envs.training.optim import OPTIMIZERS, get_optimizer_spec, register_optimizer
from geodesics.finders.base import FINDERS
from metaopt.objectives.registry import OBJECTIVES
from metaopt.outer.registry import ESTIMATORS
from metaopt.rules.registry import RULES


@dataclass
class _Options:
    """Options of the toy entry."""

    size: int = 3
    """How many."""
    name: str = "x"


class _Base:
    Config = _Options


class _Thing(_Base):
    pass


class _Other(_Base):
    pass


def test_every_registry_is_the_one_implementation() -> None:
    for registry in (TASKS, OPTIMIZERS, RULES, ESTIMATORS, OBJECTIVES, FINDERS):
        assert type(registry) is Registry and registry.names() == sorted(registry.names()) and registry.names()


def test_a_taken_name_is_refused_and_the_same_entry_again_is_not() -> None:
    things: Registry[type[_Base]] = Registry("thing", _Base)
    things.register("a", _Thing)
    things.register("a", _Thing)  # a module imported twice: no change, no error
    with pytest.raises(ValueError, match="a thing is already registered as 'a'"):
        things.register("a", _Other)
    assert things.get("a") is _Thing and things.names() == ["a"]
    with pytest.raises(TypeError, match="must be a _Base subclass"):
        things.register("b", int)  # type: ignore[arg-type]
    things.unregister("a")
    assert "a" not in things and things.names() == []


def test_an_optimizer_name_is_refused_when_taken_and_an_equal_registration_is_not() -> None:
    register_optimizer("adam", "torch.optim:Adam")  # the built-in again (a module imported twice): no change
    with pytest.raises(ValueError, match="an optimizer is already registered as 'adam'"):
        register_optimizer("adam", "torch.optim:SGD")
    import torch

    assert get_optimizer_spec("adam").factory is torch.optim.Adam  # the string is imported on lookup
    with pytest.raises(ValueError, match="unknown optimizer 'adamax2'; valid optimizers: adam, adamw"):
        get_optimizer_spec("adamax2")


def test_options_are_validated_against_the_entrys_config_and_described() -> None:
    things: Registry[type[_Base]] = Registry("thing", _Base)
    things.register("a", _Thing)
    assert things.config("a", {"size": 5}) == _Options(size=5)
    given = _Options(size=7)
    assert things.config("a", given) is given
    with pytest.raises(ValueError, match="thing 'a' has no option colour; its options: size, name"):
        things.config("a", {"colour": 1})
    with pytest.raises(ValueError, match="unknown thing 'b'; valid things: a"):
        things.get("b")
    described = things.describe("a").splitlines()
    assert described == ["options of thing 'a':", "  size: int = 3  How many.", "  name: str = 'x'"]


def test_factories_carry_flags_and_may_have_no_options() -> None:
    makers: Registry[object] = Registry("maker")
    makers.register("plain", len)
    makers.register("special", max, fast=True)
    makers.register("careful", min, fast=False, exact=True)
    assert makers.flag("special", "fast") is True and makers.flag("plain", "fast") is False
    assert makers.flag("careful", "fast") is False and makers.flag("careful", "exact") is True
    assert makers.flag("unknown", "fast", default=None) is None
    assert makers.with_flag("fast") == ["special"]
    with pytest.raises(ValueError, match="maker 'plain' takes no options"):
        makers.config("plain", {})
    assert makers.describe("plain") == "maker 'plain': no options"
