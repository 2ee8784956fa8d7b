"""``LearnedOptimizer`` under ``torch.distributed``: DDP steps as one process does; shards are refused.

Two gloo ranks on the CPU (``torch.multiprocessing.spawn``), each with half of a batch: DDP averages the gradients,
so every rank must end with the parameters one process reaches on the whole batch (to the rounding of the
all-reduce) and the ranks with exactly the same parameters. A ``DTensor`` parameter (what FSDP2 and tensor
parallelism make) is refused with a message naming the alternative, not stepped shard by shard.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from metaopt import LearnedOptimizer

STEPS = 4
CHECKPOINTS = ("family-v3", "family-mlp-v0")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(32, 6, generator=generator), torch.randint(0, 3, (32,), generator=generator)


def _train(model: nn.Module, checkpoint: str, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    opt = LearnedOptimizer(model.parameters(), checkpoint=checkpoint)
    for _ in range(STEPS):
        opt.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        opt.step()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        inputs, targets = _batch()
        half = len(inputs) // world
        mine = slice(rank * half, (rank + 1) * half)
        for checkpoint in CHECKPOINTS:
            model = nn.parallel.DistributedDataParallel(_model())
            _train(model, checkpoint, inputs[mine], targets[mine])
            torch.save([p.detach() for p in model.module.parameters()], Path(out) / f"{checkpoint}-{rank}.pt")
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Shard, distribute_tensor

        mesh = init_device_mesh("cpu", (world,))
        sharded = nn.Parameter(distribute_tensor(torch.randn(4, 6), mesh, [Shard(0)]))
        try:
            LearnedOptimizer(
                [nn.Parameter(torch.zeros(3)), sharded, nn.Parameter(torch.zeros(2))], checkpoint="family-v3"
            )
        except ValueError as error:
            (Path(out) / f"refused-{rank}.txt").write_text(str(error))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ddp_ranks_step_as_one_process_on_the_whole_batch_and_shards_are_refused(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    inputs, targets = _batch()
    for checkpoint in CHECKPOINTS:
        alone = _model()
        _train(alone, checkpoint, inputs, targets)
        ranks = [torch.load(tmp_path / f"{checkpoint}-{rank}.pt") for rank in range(2)]
        start = list(_model().parameters())
        for zero, one, single, first in zip(*ranks, alone.parameters(), start):
            assert torch.equal(zero, one), checkpoint  # the ranks step the same tensors from the same gradients
            moved = float((single - first).detach().abs().max())
            assert moved > 1e-3, checkpoint  # the comparison below is not between two parameters that never moved
            torch.testing.assert_close(zero, single.detach(), rtol=1e-4, atol=1e-5 * moved)
    for rank in range(2):
        message = (tmp_path / f"refused-{rank}.txt").read_text()
        assert "sharded parameters" in message and "DTensor" in message and "DistributedDataParallel" in message
