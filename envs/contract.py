"""Moved to :mod:`envs.task.contract`; this name stays so that older imports keep working (the same module)."""

import sys

from envs.task import contract as _module

sys.modules[__name__] = _module
