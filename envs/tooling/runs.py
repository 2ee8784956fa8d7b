"""Run directories, shared by every command.

``runs/<name>-<time>/`` holds ``config.yaml`` (the resolved config), ``tb/`` (TensorBoard events, tags grouped as
``meta/``, ``inner/``, ``geodesic/``, ``compare/``), ``records.jsonl`` (one JSON object per finished unit of work,
enough to resume), ``checkpoints/``, ``plots/`` and ``report.md``. Anything a crash could cut in half is written to a
temporary file and renamed into place; ``records.jsonl`` is appended line by line and a torn last line is ignored.

One process at a time writes to a run directory: :meth:`Run.create` takes an exclusive lock on ``<run>/.lock``
(released when the run is closed or the process dies, ``kill -9`` included) and a second process gets a
:class:`~envs.errors.RunLockedError`. A write that fails for want of space raises
:class:`~envs.errors.StorageError` with the fix, and leaves the previous version of the file in place.

Several ranks of one ``torchrun`` launch share a run (``Run.create(..., shared=True)``, the commands that split their
units of work): rank 0 takes the lock, writes ``config.yaml``, the report and TensorBoard; rank k > 0 opens the
directory rank 0 made and appends its records to ``records.rank<k>.jsonl``. :meth:`Run.records` reads every record
file (a line already folded into ``records.jsonl`` counted once), and :meth:`Run.collect`, after every rank finished,
folds the ranks' files into ``records.jsonl``: a finished run looks as a one-process run leaves it, and a killed one
resumes with any number of ranks.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf

from envs.errors import ConfigError, RunLockedError, StorageError
from envs.tooling import distributed

try:
    import fcntl
except ImportError:  # not POSIX: no run-directory locks
    fcntl = None  # type: ignore[assignment]
from envs.tooling.config import to_yaml

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["RESULT_NEUTRAL_KEYS", "Run", "atomic_torch_save", "atomic_write_bytes", "atomic_write_text"]

RESULT_NEUTRAL_KEYS = frozenset({"out", "name", "timing"})
"""Config keys (at any depth) that do not change a run's results: a run directory moved, copied or renamed resumes,
and a comparison run without wall times resumes with ``timing=true`` to add them (and the reverse leaves them out of
the report)."""
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a torn mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _storage_error(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the user's normal permissions
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _storage_error(exc, path) from None
        raise


def _storage_error(exc: OSError, path: Path) -> OSError:
    """A full disk as one clear :class:`StorageError`; other OS errors unchanged."""
    if exc.errno not in _NO_SPACE:
        return exc
    return StorageError(
        exc.errno,
        f"no space left on the device while writing {path}; its previous version (if any) is intact and the finished "
        "work of the run is kept: free some space and rerun the same command (same out=) to continue",
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomic :func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through an atomic rename."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": JSON has no literal for them
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    return value


class Run:
    """A run directory. Create with :meth:`create`; use as a context manager to close the TensorBoard writer.

    Args:
        path: the directory (must exist).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._writer: SummaryWriter | None = None
        self._locked = False
        self.rank = 0
        """The rank of this process in a shared run (0 alone): rank k > 0 writes only its own records file."""

    @classmethod
    def create(
        cls, name: str, config: Any, out: str | None = None, root: str | Path = "runs", *, shared: bool = False
    ) -> Run:
        """Make (or reopen) the run directory of a command.

        Args:
            name: short name of the command or experiment; the directory is ``<root>/<name>-<YYYYmmdd-HHMMSS>``.
            config: the resolved config dataclass, saved as ``config.yaml``.
            out: an explicit directory instead. If it already holds a run with the same config (keys in
                :data:`RESULT_NEUTRAL_KEYS`, such as ``out`` itself, aside), that run is reopened so a killed command
                continues; a different config is an error and nothing is overwritten, unless the run there did no
                work yet (no records, no checkpoints): then the new config replaces it.
            root: parent of timestamped directories.
            shared: the command splits its work over the ranks of a ``torchrun`` launch: join the process group
                (:func:`envs.tooling.distributed.init`); rank 0 makes the directory as above and the other ranks open
                it (an error on rank 0 is raised on every rank). Without torchrun this changes nothing.

        Raises:
            RunLockedError: another process is writing to that directory.
            ConfigError: ``out`` holds something else, or a run with a different config.
        """
        if not shared or not distributed.init(getattr(config, "device", None)) or distributed.world_size() == 1:
            return cls._create(name, config, out, root)
        made: Run | BaseException | None = None
        if distributed.is_main():
            try:
                made = cls._create(name, config, out, root)
            except Exception as exc:  # every rank stops with rank 0's error
                made = exc
        path = distributed.broadcast_object(str(made.path) if isinstance(made, Run) else made)
        if isinstance(path, BaseException):
            raise path
        if isinstance(made, Run):
            return made
        run = cls(path)
        run.rank = distributed.rank()
        return run

    @classmethod
    def _create(cls, name: str, config: Any, out: str | None, root: str | Path) -> Run:
        text = to_yaml(config)
        if out:
            path = Path(out)
            existing = path / "config.yaml"
            if not existing.is_file() and path.exists() and any(p.name != ".lock" for p in path.iterdir()):
                raise ConfigError(f"out={out} exists and is not a run directory (no config.yaml); choose another out=")
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = Path(root) / f"{name}-{stamp}"
            suffix = 1
            while path.exists():
                suffix += 1
                path = Path(root) / f"{name}-{stamp}-{suffix}"
            existing = path / "config.yaml"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _storage_error(exc, path) from None
        run = cls(path)
        run._lock()
        try:
            if existing.is_file() and _same_config(existing, text, _holds_work(path), config):
                return run
            atomic_write_text(existing, text)
        except BaseException:
            run.close()
            raise
        return run

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """An existing run directory (for ``resume=``); a clear error when it is not one."""
        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise ConfigError(f"{path} is not a run directory (no config.yaml); pass the folder a command printed")
        return cls(path)

    # -- files --------------------------------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        """``config.yaml``."""
        return self.path / "config.yaml"

    def subdir(self, name: str) -> Path:
        """``<run>/<name>/``, created on demand (``plots``, ``checkpoints``, ...)."""
        sub = self.path / name
        sub.mkdir(parents=True, exist_ok=True)
        return sub

    def write_text(self, relative: str, text: str) -> Path:
        """Atomically write a text file inside the run; returns its path."""
        target = self.path / relative
        atomic_write_text(target, text)
        return target

    # -- records ------------------------------------------------------------------------------------------------------

    @property
    def records_path(self) -> Path:
        """The file this process appends to: ``records.jsonl``, or ``records.rank<k>.jsonl`` on rank k > 0."""
        return self.path / ("records.jsonl" if self.rank == 0 else f"records.rank{self.rank}.jsonl")

    def append_record(self, record: Mapping[str, Any]) -> None:
        """Append one JSON object as a line, flushed to disk before returning."""
        self.append_records([record])

    def append_records(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append JSON objects, one per line, with a single flush to disk (a batch of finished units).

        A crash part-way leaves whole lines and at most one torn last line, which :meth:`records` skips; the next
        append starts on a fresh line, so a torn line never swallows a new record.
        """
        if not records:
            return
        text = "".join(json.dumps(_jsonable(record), sort_keys=True) + "\n" for record in records)
        try:
            with open(self.records_path, "ab") as f:
                if f.tell() > 0 and not _ends_with_newline(self.records_path):
                    text = "\n" + text
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a torn last line is skipped by records(); the next append starts a fresh line
            raise _storage_error(exc, self.records_path) from None

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All complete records (a torn last line from a crash is skipped), optionally only those of ``kind``.

        Those of ``records.jsonl`` first, then those of every rank's file not folded into it yet.
        """
        return [record for _, record in self._iter_records(kind)]

    def agreed_records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """:meth:`records`, read by every rank before any rank appends more (a barrier after the read).

        Ranks share the work still to do by what the records say is done; a rank that raced ahead and appended
        before a slower one read would make their views, and so their shares, differ: some work done twice, some
        never. Alone it is :meth:`records`.
        """
        records = self.records(kind)
        distributed.barrier()
        return records

    def _rank_files(self) -> list[Path]:
        """The ranks' record files, by rank."""
        files = [p for p in self.path.glob("records.rank*.jsonl") if p.name[12:-6].isdigit()]
        return sorted(files, key=lambda p: int(p.name[12:-6]))

    def _iter_records(self, kind: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        main = self.path / "records.jsonl"
        seen: set[str] = set()
        for source in [main, *self._rank_files()]:
            if not source.is_file():
                continue
            for line in source.read_text(encoding="utf-8").splitlines():
                if source != main and line in seen:  # folded already, then killed before the rank file was removed
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if source == main:
                    seen.add(line)
                if kind is None or record.get("kind") == kind:
                    yield line, record

    def collect(self) -> list[dict[str, Any]]:
        """Wait for every rank, then (rank 0) fold the ranks' record files into ``records.jsonl``.

        Call it once the work is done, before writing what is read from the records. Alone it folds what a killed
        multi-rank run left. Every rank may read :meth:`records` afterwards.

        Returns:
            On rank 0, the records moved out of the ranks' files (computed by other ranks); elsewhere ``[]``.
        """
        distributed.barrier()
        folded: list[dict[str, Any]] = []
        files = self._rank_files() if self.rank == 0 else []
        if files:
            main = self.path / "records.jsonl"
            own = {line for line, _ in _complete_lines(main)}
            lines = [line for line, _ in _complete_lines(main)]
            for source in files:
                for line, record in _complete_lines(source):
                    if line not in own:
                        lines.append(line)
                        folded.append(record)
            atomic_write_text(main, "".join(line + "\n" for line in lines))
            for source in files:
                source.unlink()
        distributed.barrier()
        return folded

    # -- TensorBoard --------------------------------------------------------------------------------------------------

    @property
    def writer(self) -> SummaryWriter:
        """The run's TensorBoard writer (``tb/``), created on first use with the resolved config logged as text.

        On rank k > 0 of a shared run, a writer that drops everything: rank 0 alone writes TensorBoard.
        """
        if self.rank != 0:
            return _NullWriter()  # type: ignore[return-value]
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path / "tb"))
            if self.config_path.is_file():
                config = self.config_path.read_text(encoding="utf-8")
                self._writer.add_text("config", "```yaml\n" + config + "\n```", 0)
        return self._writer

    def announce(self, tensorboard: bool = True) -> None:
        """Print where the run writes, first thing (rank 0 only).

        The run directory and, for a run with TensorBoard logs, the ``tensorboard --logdir`` line, so that its curves
        can be watched while it runs.
        """
        if self.rank != 0:
            return
        print(f"run directory: {self.path}")
        if tensorboard:
            print(f"tensorboard --logdir {self.path / 'tb'}")

    def log_scalars(self, group: str, metrics: Mapping[str, float], step: int) -> None:
        """Write ``metrics`` as scalars tagged ``<group>/<key>`` (finite values only)."""
        if self.rank != 0:
            return
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{group}/{key}", value, step)

    def flush(self) -> None:
        """Write the TensorBoard events logged so far to disk.

        Called before a checkpoint that a resumed run starts from: a killed run must not lose events it will not log
        again.
        """
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer; release the directory's lock."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._locked:
            self._locked = False
            _release(self.path)

    def _lock(self) -> None:
        _acquire(self.path)
        self._locked = True

    def __del__(self) -> None:
        if getattr(self, "_locked", False):
            self._locked = False
            _release(self.path)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


class _NullWriter:
    """What a rank other than 0 logs to: nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _complete_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The lines of a records file that hold a whole record, with the record (a torn line is left out)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append((line, json.loads(line)))
        except json.JSONDecodeError:
            continue
    return out


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _same_config(existing: Path, text: str, has_work: bool, config: Any = None) -> bool:
    """Whether the run at ``existing`` may be continued with ``text``: False means "write the new config".

    A key the saved config lacks (written before the option existed) counts as the option's default in ``config``'s
    schema: options are added with defaults that keep the earlier behaviour, so such a run resumes while the new
    config leaves the key at its default.

    Raises:
        ConfigError: the configs differ in keys that change results and the run there already did work.
    """
    saved = None
    if config is not None and dataclasses.is_dataclass(config):  # a run saved before a key moved compares as today's
        from envs.tooling.config import saved_as_today

        saved = saved_as_today(type(config), existing)
    old = _without_neutral(
        OmegaConf.to_container(OmegaConf.load(existing) if saved is None else OmegaConf.create(saved))
    )
    new = _without_neutral(OmegaConf.to_container(OmegaConf.create(text)))
    if config is not None and isinstance(old, dict) and isinstance(new, dict):
        _fill_defaults(old, new, config)
    if old == new:
        return True
    if not has_work:
        return False
    assert isinstance(old, dict) and isinstance(new, dict)
    differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise ConfigError(
        f"{existing.parent} already holds a run made with a different config (differs in: "
        f"{', '.join(differing)}); nothing was changed. Rerun with the same config to continue it, "
        "or pick a new out="
    )


def _fill_defaults(old: dict, new: dict, config: Any) -> None:
    """Give ``old`` the schema default of every key it lacks that ``new`` has (recursing into nested configs)."""
    if not dataclasses.is_dataclass(config):
        return
    by_name = {f.name: f for f in dataclasses.fields(config)}
    for key, value in new.items():
        f = by_name.get(key)
        if f is None:
            continue
        if key not in old:
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                continue
            if dataclasses.is_dataclass(default) or isinstance(default, (list, dict)):
                default = OmegaConf.to_container(OmegaConf.create(to_yaml(default)))
            old[key] = _without_neutral(default)
        elif isinstance(old[key], dict) and isinstance(value, dict):
            _fill_defaults(old[key], value, getattr(config, key, None))


def _without_neutral(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_neutral(v) for k, v in value.items() if k not in RESULT_NEUTRAL_KEYS}
    if isinstance(value, list):
        return [_without_neutral(v) for v in value]
    return value


def _holds_work(path: Path) -> bool:
    """Whether a run directory holds finished work: records, checkpoints or saved tensors."""
    if any(records.stat().st_size > 0 for records in path.glob("records*.jsonl")):
        return True
    checkpoints = path / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        return True
    return any(path.glob("*.pt")) or any(p.is_dir() and (p / "config.yaml").is_file() for p in path.iterdir())


_HELD: dict[str, list[int]] = {}
"""Run directories this process holds the lock of: resolved path -> [file descriptor, number of open Runs]."""


def _acquire(path: Path) -> None:
    key = str(path.resolve())
    if key in _HELD:  # the same process may open its run twice (a stage of the quickstart, a test)
        _HELD[key][1] += 1
        return
    if fcntl is None:
        return
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunLockedError(
            f"{path} is in use by another process (pid {holder}): one command at a time per run directory. Wait "
            "for it to finish (then rerun to continue), or choose another out="
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD[key] = [fd, 1]


def _release(path: Path) -> None:
    key = str(path.resolve())
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _HELD[key]
        os.close(held[0])  # closing the descriptor releases the flock
