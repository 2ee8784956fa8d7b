"""The registry of learned rules and estimators: the foundation's one :class:`~envs.tooling.registry.Registry`.

Kept as an import path for code written against it; new code imports :mod:`envs.tooling.registry`.
"""

from envs.tooling.registry import Entry, Registry

__all__ = ["Entry", "Registry"]
