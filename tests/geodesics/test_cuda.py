"""The engine on CUDA gives what it gives on CPU (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

import envs
from geodesics import DSSConfig, ParamSpace, connect, segment_maxima
from tests.geodesics.toys import AnalyticTask, annulus

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_batched_losses_match_cpu() -> None:
    cpu, gpu = envs.make_task("digits_cnn"), envs.make_task("digits_cnn", device="cuda")
    space_cpu, space_gpu = ParamSpace(cpu), ParamSpace(gpu)
    thetas = torch.stack([space_cpu.flatten(cpu.init_model(s)) for s in range(8)])
    on_gpu = space_gpu.batched_eval_loss(thetas).cpu()
    torch.testing.assert_close(on_gpu, space_cpu.batched_eval_loss(thetas), rtol=1e-4, atol=1e-5)
    starts, ends = thetas[:4], thetas[4:]
    for a, b in zip(segment_maxima(space_cpu, starts, ends), segment_maxima(space_gpu, starts, ends)):
        assert abs(a.value - b.value) < 1e-4


def test_connect_on_cuda_keeps_endpoints_and_connects() -> None:
    task = AnalyticTask(annulus, device="cuda")
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])
    string = connect(ParamSpace(task), a, b, 0.01, DSSConfig(check_every=1))
    assert string.connected and string.beads.device.type == "cuda"
    assert torch.equal(string.beads[0].cpu(), a) and torch.equal(string.beads[-1].cpu(), b)
