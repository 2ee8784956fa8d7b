"""Several processes on one run: ``torchrun`` launches them, ``torch.distributed`` connects them.

``torchrun --nproc_per_node=N -m geodesics sweep CONFIG ...`` starts N copies of a command; each finds its rank and
the others from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``). :func:`init` joins the process group (``gloo`` on CPU, ``nccl`` on CUDA, where it also selects the
GPU ``LOCAL_RANK``); without those variables it does nothing and every helper here answers as for one process (rank
0 of 1), so the same command runs alone exactly as it always did. There is no launcher of our own.

How the commands share work (see ``docs/design.md``, "Several processes: torchrun"):

* commands made of independent units (sweep groups, compare-paths pairs, targets base runs, compare chunks) list
  the units not yet recorded in the run directory, in the config's fixed order, and each rank takes
  :func:`shard` of that list: round-robin, so a rerun with any number of ranks does exactly the missing units;
* a unit's records depend only on the unit (its seeds come from the config and the unit's index), never on the rank
  that computed it;
* meta-training splits the meta-batch into contiguous :func:`block` shares and averages the meta-gradients.

The run directory is shared (on several nodes it must be on a shared file system): see :mod:`envs.tooling.runs`.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "block",
    "broadcast_object",
    "init",
    "is_main",
    "launched",
    "rank",
    "shard",
    "teardown",
    "world_size",
]

T = TypeVar("T")

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (its rank variables are set) for more than one process."""
    return all(key in os.environ for key in _ENV) and int(os.environ["WORLD_SIZE"]) > 1


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(device: str | None = None) -> bool:
    """Join the process group of a ``torchrun`` launch, once; returns whether this process is one of several.

    Args:
        device: the command's ``device`` setting; ``cuda`` (or ``cuda:K``) selects NCCL and the GPU ``LOCAL_RANK``,
            anything else gloo. ``auto`` means CUDA when it is available.
    """
    if _active():
        return True
    if not launched():
        return False
    cuda = str(device or "cpu").startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    atexit.register(teardown)
    return True


def teardown() -> None:
    """Leave the process group (a no-op when there is none); registered at exit by :func:`init`."""
    if _active():
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    """Whether this is rank 0, the one that owns the run directory's lock, config, report and TensorBoard."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op alone)."""
    if _active():
        dist.barrier()


def shard(units: Sequence[T], rank: int | None = None, world: int | None = None) -> list[T]:
    """This rank's units: every ``world``-th one from ``rank`` (round-robin over the list as given).

    Pass the units still to do, in a fixed order: the split then depends on the config and the records only, and
    a resumed run with any number of ranks does each missing unit exactly once.
    """
    rank = _current_rank() if rank is None else rank
    world = world_size() if world is None else world
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    return list(units[rank::world])


def block(count: int, rank: int | None = None, world: int | None = None) -> range:
    """This rank's contiguous share of ``count`` items (sizes differ by at most one; the first ranks get more)."""
    rank = _current_rank() if rank is None else rank
    world = world_size() if world is None else world
    size, extra = divmod(count, world)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


_current_rank = rank  # :func:`shard` and :func:`block` take a ``rank`` argument that shadows the function


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` alone."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` elsewhere is ignored)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of ``tensor`` (in place; returned). Alone: ``tensor`` itself."""
    if _active():
        if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
            moved = tensor.cuda()
            dist.all_reduce(moved)
            tensor.copy_(moved)
        else:
            dist.all_reduce(tensor)
    return tensor
