"""Moved to :mod:`envs.training.schedules`; this name stays so that older imports keep working (the same module)."""

import sys

from envs.training import schedules as _module

sys.modules[__name__] = _module
