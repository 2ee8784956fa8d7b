"""The ``bmm`` strategy: explicit batched matmuls and a written-out backward agree with the loop and with autograd.

Tolerances: losses to rtol 1e-5 / atol 1e-6 and gradients to rtol 1e-4 / atol 1e-6 of the loop (as the vmap tests
in test_space.py); measured differences are a few 1e-7 relative (float32 rounding of other matmul orders).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import envs
from envs.tooling.cli import intra_op_threads
from geodesics import ParamSpace
from geodesics.batched_mlp import mlp_plan
from geodesics.cli import main
from tests.geodesics.toys import AnalyticTask, annulus

MLPS = ["digits_mlp", "poly_quadratic", "poly_cubic"]


def perturbed(space: ParamSpace, count: int, seed: int = 0) -> torch.Tensor:
    base = space.flatten(space.task.init_model(0))
    return base + 0.1 * torch.randn(count, base.numel(), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", MLPS)
@pytest.mark.parametrize("count", [1, 3, 8])
def test_bmm_losses_match_the_loop(name: str, count: int) -> None:
    task = envs.make_task(name)
    loop, bmm = ParamSpace(task, strategy="loop"), ParamSpace(task, strategy="bmm")
    thetas = perturbed(loop, count)
    batch = next(task.batches(0))
    torch.testing.assert_close(bmm.batched_loss(thetas, batch), loop.batched_loss(thetas, batch), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bmm.batched_eval_loss(thetas), loop.batched_eval_loss(thetas), rtol=1e-5, atol=1e-6)
    assert bmm.evaluations == 2 * count


@pytest.mark.parametrize("name", MLPS)
@pytest.mark.parametrize("count", [1, 3, 8])
def test_bmm_gradients_match_the_loop_and_autograd(name: str, count: int) -> None:
    task = envs.make_task(name)
    loop, bmm = ParamSpace(task, strategy="loop"), ParamSpace(task, strategy="bmm")
    thetas = perturbed(loop, count)
    batch = next(task.batches(0))
    values, grads = bmm.batched_value_and_grad(thetas, batch)
    expected_values, expected_grads = loop.batched_value_and_grad(thetas, batch)
    assert grads.shape == (count, task.num_params) and bmm.gradients == count
    torch.testing.assert_close(values, expected_values, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads, expected_grads, rtol=1e-4, atol=1e-6)
    assert bmm._plan is not None
    auto_values, auto_grads = bmm._plan.values_and_grads_autograd(task, thetas, batch)  # autograd over the batch
    torch.testing.assert_close(values, auto_values, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads, auto_grads, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("options", [{"activation": "tanh", "depth": 2}, {"activation": "relu", "depth": 2}])
def test_every_activation_and_depth_matches_the_loop(options: dict[str, object]) -> None:
    task = envs.make_task("digits_mlp", **options)
    loop, bmm = ParamSpace(task, strategy="loop"), ParamSpace(task, strategy="bmm")
    thetas = perturbed(loop, 4)
    batch = next(task.batches(0))
    values, grads = bmm.batched_value_and_grad(thetas, batch)
    expected_values, expected_grads = loop.batched_value_and_grad(thetas, batch)
    torch.testing.assert_close(values, expected_values, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads, expected_grads, rtol=1e-4, atol=1e-6)


def test_the_cross_entropy_fast_path_equals_the_generic_criterion() -> None:
    # the plan computes the classification tasks' criterion on class-major outputs itself; without the task it
    # differentiates task.criterion with torch.func: both must agree
    task = envs.make_task("digits_mlp")
    space = ParamSpace(task, strategy="bmm")
    fast, generic = mlp_plan(space.model, space.names, task), mlp_plan(space.model, space.names)
    assert fast.cross_entropy and not generic.cross_entropy
    thetas = perturbed(space, 5)
    batch = next(task.batches(0))
    torch.testing.assert_close(fast.losses(task, thetas, batch), generic.losses(task, thetas, batch))
    for got, want in zip(fast.values_and_grads(task, thetas, batch), generic.values_and_grads(task, thetas, batch)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_classification_losses_take_the_cross_entropy_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is the one taken for class-index targets, for losses and for gradients (not only correct)."""
    from geodesics import batched_mlp

    task = envs.make_task("digits_mlp")
    space = ParamSpace(task, strategy="bmm")
    plan = mlp_plan(space.model, space.names, task)
    calls: list[bool] = []
    real = batched_mlp._cross_entropy

    def counted(logits: torch.Tensor, targets: torch.Tensor, grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(grad)
        return real(logits, targets, grad)

    monkeypatch.setattr(batched_mlp, "_cross_entropy", counted)
    thetas, batch = perturbed(space, 3), next(task.batches(0))
    plan.losses(task, thetas, batch)
    plan.values_and_grads(task, thetas, batch)
    assert calls == [False, True]


@pytest.mark.skipif(torch.get_num_threads() > 2, reason="measured at 1 and 2 threads only")
@pytest.mark.parametrize("name", MLPS)
def test_bmm_rows_do_not_depend_on_the_batch_they_are_in_on_cpu(name: str) -> None:
    # measured on CPU with one thread: a row's bits do not depend on the other rows of its batch or on the chunking,
    # M = 1 included (run as two rows); with two threads that held on one CPU and not on another (AVX-512), where the
    # work is split by the batch's size. A property of the kernels, so ParamSpace.exact stays False.
    with intra_op_threads(1):
        _rows_do_not_depend_on_their_batch(name)


def _rows_do_not_depend_on_their_batch(name: str) -> None:
    task = envs.make_task(name)
    space = ParamSpace(task, strategy="bmm")
    assert space.strategy == "bmm" and not space.exact
    thetas = perturbed(space, 9)
    batch = next(task.batches(0))
    full_losses = space.batched_loss(thetas, batch)
    full_values, full_grads = space.batched_value_and_grad(thetas, batch)
    for rows in ([4], [8, 0], [2, 3, 5], list(range(9))[::-1]):
        assert torch.equal(space.batched_loss(thetas[rows], batch), full_losses[rows])
        values, grads = space.batched_value_and_grad(thetas[rows], batch)
        assert torch.equal(values, full_values[rows]) and torch.equal(grads, full_grads[rows])
    tight = ParamSpace(task, strategy="bmm", memory_budget=1)  # chunks of one model
    values, grads = tight.batched_value_and_grad(thetas, batch)
    assert torch.equal(values, full_values) and torch.equal(grads, full_grads)
    assert torch.equal(tight.batched_eval_loss(thetas), space.batched_eval_loss(thetas))


def test_default_strategy_is_unchanged() -> None:
    assert ParamSpace(envs.make_task("digits_mlp")).strategy == "loop"


@pytest.mark.parametrize(("name", "reason"), [("digits_cnn", "SmallConvNet, not an nn.Sequential"),
                                              ("charlm", "CharLSTM, not an nn.Sequential")])  # fmt: skip
def test_models_that_are_not_mlps_are_a_clear_error(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"strategy 'bmm' needs.*{name}.*{reason}.*Valid strategies for this task: "
                                         "auto, loop, vmap"):  # fmt: skip
        ParamSpace(envs.make_task(name), strategy="bmm")


class SoftplusTask(AnalyticTask):
    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(2, 2), nn.Softplus())


def test_an_unsupported_layer_is_named() -> None:
    with pytest.raises(ValueError, match="module '1' is a Softplus"):
        ParamSpace(SoftplusTask(annulus), strategy="bmm")


def test_commands_take_the_strategy_and_refuse_bad_ones_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    assert main(["connect", "strategy=fast", f"out={out}"]) == 2
    assert "strategy must be one of auto, loop, vmap, bmm, got 'fast'" in capsys.readouterr().err
    assert main(["sweep", "task.name=digits_cnn", "strategy=bmm", f"out={out}"]) == 2
    assert "strategy 'bmm' needs a model that is a plain nn.Sequential" in capsys.readouterr().err
    assert main(["connect", "task.name=digits_cnn", "strategy=bmm", f"out={out}"]) == 2
    assert not out.exists()
    assert main(["connect", "strategy=bmm", "threshold=0.2", "a.max_steps=400", "b.max_steps=400",
                 f"out={out}"]) == 0  # fmt: skip
    string = torch.load(out / "string.pt", weights_only=False)
    assert string["strategy"] == "bmm"
