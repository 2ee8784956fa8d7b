"""Moved to :mod:`envs.task.nn`; this name stays so that older imports keep working (the same module)."""

import sys

from envs.task import nn as _module

sys.modules[__name__] = _module
