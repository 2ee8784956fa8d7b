"""Learned rules by name: ``metaopt train rule=NAME`` and checkpoints find their rule class here.

A new rule is one module defining a :class:`~metaopt.rules.base.LearnedRule` subclass and one line
``register_rule("name", RuleClass)`` (the package's own rules register in :mod:`metaopt.rules`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envs.tooling.registry import Registry
from metaopt.rules.base import LearnedRule

__all__ = ["RULES", "get_rule_class", "list_rules", "make_rule", "register_rule", "rule_config", "rule_name"]

RULES: Registry[type[LearnedRule]] = Registry("rule", LearnedRule)
"""The registered rules."""


def register_rule(name: str, cls: type[LearnedRule]) -> None:
    """Make ``cls`` the rule called ``name`` (``cls.Config`` must be a dataclass)."""
    RULES.register(name, cls)


def list_rules() -> list[str]:
    """Names of the registered rules."""
    return RULES.names()


def get_rule_class(name: str) -> type[LearnedRule]:
    """The rule class registered as ``name``; a clear error naming the valid rules otherwise."""
    return RULES.get(name)


def rule_name(rule: LearnedRule) -> str:
    """The registered name of ``rule``'s class (what a checkpoint records)."""
    return RULES.name_of(rule)


def rule_config(name: str, options: Mapping[str, Any] | Any) -> Any:
    """The ``Config`` of rule ``name`` from a mapping of its fields (or a config instance, returned as is)."""
    return RULES.config(name, options)


def make_rule(name: str, options: Mapping[str, Any] | Any = None) -> LearnedRule:
    """A new rule ``name`` with ``options`` (a mapping of its config's fields, a config instance, or None)."""
    return RULES.get(name)(RULES.config(name, {} if options is None else options))
