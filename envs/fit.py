"""Moved to :mod:`envs.training.fit`; this name stays so that older imports keep working (the same module)."""

import sys

from envs.training import fit as _module

sys.modules[__name__] = _module
