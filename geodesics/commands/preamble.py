"""What every geodesics command does first: build its task's parameter space once, and fail before writing anything.

A command's config names a task (``task.name``, ``task.options``), a device and dtype, and often an evaluation
``strategy`` and an ``align`` method. :func:`command_space` turns them into the :class:`~geodesics.space.ParamSpace`
the command works in, so that a bad task option, missing data files, a strategy the model cannot take or an
alignment the model cannot take is refused (exit code 2) before the run directory exists, not after minutes of
endpoint training.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from envs.task.registry import make_task
from geodesics.alignment import check_alignable
from geodesics.endpoints import PROGRESS
from geodesics.space import ParamSpace

__all__ = ["command_space", "progress_lines"]


def command_space(cfg: Any) -> ParamSpace:
    """The parameter space of ``cfg.task`` on ``cfg.device`` in ``cfg.dtype`` (and ``cfg.strategy``, if it has one).

    Raises:
        TaskError, ConfigError: a bad task, missing data, or an ``align`` the model cannot take.
    """
    task = make_task(cfg.task.name, device=cfg.device, dtype=cfg.dtype, **cfg.task.options).load()
    strategy = {"strategy": cfg.strategy} if hasattr(cfg, "strategy") else {}
    space = ParamSpace.from_task(task, **strategy)
    check_alignable(space, getattr(cfg, "align", "none"))
    return space


@contextlib.contextmanager
def progress_lines(prefix: str) -> Iterator[None]:
    """Show the engine's progress lines (:data:`geodesics.endpoints.PROGRESS`) on stderr while the block runs.

    For commands whose one long piece of work has no progress bar of its own (``geodesics connect``): endpoint
    training and each DSS round print one line, with the seconds since the block started.
    """
    started = time.perf_counter()

    class _Elapsed(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"{prefix} [{time.perf_counter() - started:6.1f} s] {record.getMessage()}"

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Elapsed())
    previous = PROGRESS.level
    PROGRESS.addHandler(handler)
    PROGRESS.setLevel(logging.INFO)
    try:
        yield
    finally:
        PROGRESS.removeHandler(handler)
        PROGRESS.setLevel(previous)
