"""Errors the framework raises for bad input; each message names the problem and the fix."""

from __future__ import annotations

__all__ = ["ConfigError", "DataNotFoundError", "RunLockedError", "StorageError", "TaskError"]


class TaskError(ValueError):
    """An unknown task, an unknown task option or an option of the wrong type."""


class ConfigError(ValueError):
    """A configuration file or ``key=value`` override that does not fit its schema."""


class DataNotFoundError(FileNotFoundError):
    """A dataset that is read from local files is not where the task looks for it."""


class RunLockedError(ConfigError):
    """A run directory another process is writing to (one process at a time per run directory)."""


class StorageError(OSError):
    """A write that failed for want of space (or another storage fault); finished work is kept, rerun to continue."""
