"""Learned update rules behind one interface (:class:`LearnedRule`), found by name in a registry.

Members: ``lstm``, the coordinatewise LSTM of Andrychowicz et al. 2016 (:mod:`metaopt.rules.lstm`) over the gradient
features of :mod:`metaopt.rules.features`; ``mlp``, a per-parameter MLP over Adam-like accumulator features in the
spirit of learned_optimization's small_fc_lopt (:mod:`metaopt.rules.mlp`); ``tiny``, a 2 x 8 per-parameter MLP with
per-tensor normalised, muP-scaled updates, a hybrid AdamW option and an optional learned global scheduler
(:mod:`metaopt.rules.tiny`, :mod:`metaopt.rules.scheduler`). A new rule is one module and one
``register_rule`` line below.
"""

from metaopt.rules.base import LearnedRule, ParamState, RuleState, detach_state
from metaopt.rules.lstm import CoordinateLSTM, LSTMConfig, LSTMState, lstm_step
from metaopt.rules.mlp import MLPConfig, PerParameterMLP, adam_weights
from metaopt.rules.registry import get_rule_class, list_rules, make_rule, register_rule, rule_config, rule_name
from metaopt.rules.scheduler import GlobalScheduler
from metaopt.rules.tiny import TinyConfig, TinyRule

register_rule("lstm", CoordinateLSTM)
register_rule("mlp", PerParameterMLP)
register_rule("tiny", TinyRule)

__all__ = [
    "CoordinateLSTM",
    "GlobalScheduler",
    "LSTMConfig",
    "LSTMState",
    "LearnedRule",
    "MLPConfig",
    "ParamState",
    "PerParameterMLP",
    "RuleState",
    "TinyConfig",
    "TinyRule",
    "adam_weights",
    "detach_state",
    "get_rule_class",
    "list_rules",
    "lstm_step",
    "make_rule",
    "register_rule",
    "rule_config",
    "rule_name",
]
