"""Errors the framework raises for bad input; each message names the problem and the fix."""

from __future__ import annotations

__all__ = ["ConfigError", "DataNotFoundError", "InvalidValue", "RunLockedError", "StorageError", "TaskError"]


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


class InvalidValue(ConfigError):
    """A value outside its valid range, raised by a schema's checks; ``load_config`` adds the dotted key."""

    def __init__(self, owner: type, key: str, value: object, message: str):
        super().__init__(f"{key} {message}")
        self.owner = owner
        self.key = key
        self.value = value
        self.message = message
