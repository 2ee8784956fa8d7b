"""The tiny rule's in-place drop-in step (eager and compiled) gives the functional step's parameters and state.

The functional step (``TinyRule.step``, the one meta-training differentiates) is the reference: the in-place step must
follow it to rounding (rtol 1e-5 in float32, 1e-12 in float64) over several steps, for the learned rule on every
tensor and for the hybrid, on a model with a convolution, vectors and matrices, two parameter groups with their own
``lr`` and ``weight_decay``; a non-finite update must change nothing; inputs it does not take go to the functional
step; a compiled training step around it must give eager's parameters.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from torch import Tensor, nn

from envs.training import muon
from metaopt import LearnedOptimizer
from metaopt.rules import TinyRule, make_rule, tiny, tiny_inplace


@pytest.fixture(autouse=True)
def _eager_at_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test models are small: take the eager in-place step for them anyway."""
    monkeypatch.setattr(tiny_inplace, "EAGER_LEAST_PER_TENSOR", 0)


GROUPS = ((1.0, 0.0), (0.5, 0.1))
"""(lr, weight_decay) of the two parameter groups: the convolution and first layer, then the rest."""


def _model(dtype: torch.dtype, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3), nn.Flatten(), nn.Linear(5 * 6 * 6, 37), nn.Tanh(), nn.Linear(37, 29), nn.Tanh(),
        nn.Linear(29, 11), nn.Tanh(), nn.Linear(11, 3, bias=False),
    ).to(dtype)  # fmt: skip


def _rule(learned_tensors: str, dtype: torch.dtype, **options: object) -> TinyRule:
    """A rule whose MLP matters as much as its skip (as after meta-training)."""
    torch.manual_seed(3)
    rule = make_rule("tiny", {"learned_tensors": learned_tensors, **options}).to(dtype)
    assert isinstance(rule, TinyRule)
    with torch.no_grad():
        rule.w_out.normal_(0, 1.0)
        rule.w_time.mul_(3)
        rule.adamw_log_scale.fill_(0.3)
    return rule


def _groups(model: nn.Module) -> list[list[nn.Parameter]]:
    params = list(model.parameters())
    return [params[:4], params[4:]]


def _loss(model: nn.Module, step: int) -> Tensor:
    dtype = next(model.parameters()).dtype
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(16, 3, 8, 8, generator=generator, dtype=dtype)
    y = torch.randn(16, 3, generator=generator, dtype=dtype)
    return ((model(x) - y) ** 2).mean()


def _reference(rule: TinyRule, dtype: torch.dtype, steps: int) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """The flat parameters after each step and the final state pieces, from the functional step and the shell's rule."""
    model = _model(dtype)
    groups = _groups(model)
    params = [p for group in groups for p in group]
    options = [GROUPS[i] for i, group in enumerate(groups) for _ in group]
    state = rule.join([rule.init_state(p) for p in params])
    trajectory = []
    for step in range(steps):
        model.zero_grad()
        _loss(model, step).backward()
        with torch.no_grad():
            flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
            update, state = rule.step(flat, state, params)
            for p, delta, (lr, decay) in zip(params, update.split([p.numel() for p in params]), options):
                p.mul_(1 - lr * decay)
                p.add_(delta.view_as(p), alpha=lr)
        trajectory.append(torch.cat([p.detach().reshape(-1) for p in params]).clone())
    return trajectory, rule.split(state, params)


def _in_place(
    rule: TinyRule, dtype: torch.dtype, steps: int, compile: bool, nan_at: int | None = None
) -> tuple[list[Tensor], list[dict[str, Tensor]], LearnedOptimizer]:
    model = _model(dtype)
    groups = _groups(model)
    opt = LearnedOptimizer(
        [{"params": group, "lr": lr, "weight_decay": decay} for group, (lr, decay) in zip(groups, GROUPS)],
        rule=rule,
        compile=compile,
    )
    trajectory = []
    for step in range(steps):
        model.zero_grad()
        _loss(model, step).backward()
        if step == nan_at:
            before = [p.detach().clone() for p in model.parameters()]
            state_before = [copy.deepcopy(dict(opt.state[p])) for p in model.parameters()]
            list(model.parameters())[5].grad[3] = float("nan")  # type: ignore[index]  # one coordinate of a bias
            opt.step()
            assert opt.skipped_steps == 1
            for p, old, piece in zip(model.parameters(), before, state_before):
                assert torch.equal(p.detach(), old)
                for key, value in piece.items():
                    assert torch.equal(opt.state[p][key], value), key
            model.zero_grad()
            _loss(model, step).backward()
        opt.step()
        trajectory.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone())
    return trajectory, [opt.state[p] for p in model.parameters()], opt


def _assert_same(dtype: torch.dtype, got: tuple, expected: tuple) -> None:
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    start = _model(dtype)
    initial = torch.cat([p.detach().reshape(-1) for p in start.parameters()])
    rounding = 4 * torch.finfo(dtype).eps * float(initial.abs().max())  # of the parameters' own size
    for mine, theirs in zip(got[0], expected[0]):
        moved = float((theirs - initial).abs().max())
        assert moved > 1e-3  # the steps moved the parameters
        torch.testing.assert_close(mine, theirs, rtol=0, atol=max(rounding, rtol * moved))
    for mine_piece, their_piece in zip(got[1], expected[1]):
        assert set(mine_piece) == set(their_piece)
        for key in their_piece:
            scale = float(their_piece[key].abs().max())  # the gradients differ by the parameters' rounding
            torch.testing.assert_close(mine_piece[key], their_piece[key], rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("learned_tensors", ["all", "hidden"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_eager_in_place_step_equals_the_functional_step(learned_tensors: str, dtype: torch.dtype) -> None:
    rule = _rule(learned_tensors, dtype, adamw_weight_decay=0.01)
    expected = _reference(rule, dtype, 4)
    got = _in_place(rule, dtype, 4, compile=False)
    _assert_same(dtype, got[:2], expected)


@pytest.mark.parametrize(
    "options",
    [{"param_scale": True}, {"mup_cap": True}, {"param_feature": False, "num_layers": 3, "hidden_size": 5},
     {"scheduler": True}, {"num_layers": 1, "scheduler": True, "mup_cap": True},
     {"momentum_decays": [0.5, 0.9, 0.99], "adamw_betas": [0.8, 0.99], "learned_tensors": "hidden"},
     {"adapt_rate": 0.3, "weight_decay": 0.5}, {"weight_decay": 0.5, "scheduler": True},
     {"adapt_rate": 0.3, "weight_decay": 0.5, "param_scale": True, "learned_tensors": "hidden"},
     {"adapt_rate": 0.3, "adapt_limit": 1.5, "scheduler": True}, {"orthogonalize": True},
     {"orthogonalize": True, "ns_block": 4, "ns_steps": 3, "adapt_rate": 0.3, "weight_decay": 0.5},
     {"orthogonalize": True, "ns_block": 8, "learned_tensors": "hidden", "scheduler": True},
     {"orthogonalize": True, "ns_matrices": "hidden", "ns_block": 8, "adapt_rate": 0.3, "weight_decay": 0.5},
     {"weight_decay": 0.5, "weight_decay_mup": False, "adapt_rate": 0.3, "mup_cap": True}],
)  # fmt: skip
def test_other_options_follow_the_functional_step_too(options: dict) -> None:
    rule = _rule(options.pop("learned_tensors", "all"), torch.float64, **options)
    expected = _reference(rule, torch.float64, 3)
    _assert_same(torch.float64, _in_place(rule, torch.float64, 3, compile=False)[:2], expected)


@pytest.mark.parametrize(("learned_tensors", "dtype"), [("hidden", torch.float32), ("all", torch.float64)])
def test_the_compiled_in_place_step_equals_the_functional_step(learned_tensors: str, dtype: torch.dtype) -> None:
    rule = _rule(learned_tensors, dtype, adamw_weight_decay=0.01)
    expected = _reference(rule, dtype, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
        got = _in_place(rule, dtype, 4, compile=True)
    _assert_same(dtype, got[:2], expected)


def test_the_compiled_step_of_a_one_hidden_layer_rule_with_the_scheduler_equals_the_functional_step() -> None:
    # float64: in float32 one coordinate of 8,302 (an update that nearly cancels) differs by 2.3x the tolerance
    dtype = torch.float64
    rule = _rule("all", dtype, num_layers=1, scheduler=True, mup_cap=True)
    expected = _reference(rule, dtype, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
        got = _in_place(rule, dtype, 3, compile=True)
    _assert_same(dtype, got[:2], expected)


@pytest.mark.parametrize("shape", [(48, 20), (20, 48), (6, 2, 3, 3)])
@pytest.mark.parametrize("compile", [False, True])
def test_tall_wide_and_convolution_matrices_are_orthogonalized_in_blocks_as_the_functional_step(
    shape: tuple[int, ...], compile: bool
) -> None:
    dtype = torch.float64
    rule = _rule("all", dtype, orthogonalize=True, ns_block=8)
    param = torch.randn(*shape, dtype=dtype)
    mine, theirs = param.clone(), param.clone()
    state = rule.join([rule.init_state(param)])
    mine_state = {key: value.clone() for key, value in state.items()}
    for step in range(3):
        grad = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(step))
        with torch.no_grad():
            update, state = rule.step(grad.reshape(-1), state, [theirs])
            theirs += update.view(shape)
            assert rule.step_in_place([mine], [grad], mine_state, [(1.0, 0.0)], compile=compile) is True
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(theirs, param)


def test_bfloat16_iterations_run_in_place_as_in_the_functional_step() -> None:
    # float64: a float32 rounding difference of the direction moves a coordinate across a bfloat16 rounding boundary
    dtype = torch.float64
    rule = _rule("all", dtype, orthogonalize=True, ns_block=8, ns_dtype="bfloat16")
    expected = _reference(rule, dtype, 3)
    _assert_same(dtype, _in_place(rule, dtype, 3, compile=False)[:2], expected)
    plain = _reference(_rule("all", dtype, orthogonalize=True, ns_block=8), dtype, 3)
    for mine, theirs in zip(expected[0], plain[0]):  # another step than the float64 iterations', near it
        assert not torch.equal(mine, theirs)
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0.01)


def test_compiled_bfloat16_iterations_round_differently_but_to_bfloat16s_size() -> None:
    """The compiler fuses the casts and the products' epilogues, so its bfloat16 rounding is not the eager one."""
    dtype = torch.float64
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
        got = _in_place(_rule("all", dtype, orthogonalize=True, ns_block=8, ns_dtype="bfloat16"), dtype, 3, True)[0]
        plain = _in_place(_rule("all", dtype, orthogonalize=True, ns_block=8), dtype, 3, True)[0]
    exact = _reference(_rule("all", dtype, orthogonalize=True, ns_block=8), dtype, 3)[0]
    for mine, theirs, reference in zip(got, plain, exact):
        assert not torch.equal(mine, theirs)  # the option reaches the compiled step
        torch.testing.assert_close(theirs, reference, rtol=0, atol=1e-12)
        torch.testing.assert_close(mine, reference, rtol=0, atol=0.01)


def test_the_compiled_step_orthogonalizes_as_the_functional_step() -> None:
    dtype = torch.float64
    rule = _rule("all", dtype, orthogonalize=True, ns_block=8, weight_decay=0.5, scheduler=True)
    expected = _reference(rule, dtype, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
        got = _in_place(rule, dtype, 3, compile=True)
    _assert_same(dtype, got[:2], expected)


@pytest.mark.parametrize("compile", [False, True])
def test_a_non_finite_step_changes_nothing(compile: bool) -> None:
    dtype = torch.float32
    rule = _rule("hidden", dtype, adamw_weight_decay=0.01)
    expected = _reference(rule, dtype, 3)
    got = _in_place(rule, dtype, 3, compile=compile, nan_at=1)
    _assert_same(dtype, got[:2], expected)


@pytest.mark.parametrize("compile", [False, True])
def test_adaptation_and_decay_run_in_place_compiled_or_not_and_equal_the_functional_step(compile: bool) -> None:
    dtype = torch.float32
    rule = _rule("all", dtype, adapt_rate=0.3, weight_decay=0.5)
    param = torch.randn(64, 512, dtype=dtype)
    state = rule.join([rule.init_state(param)])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
        assert rule.step_in_place([param], [torch.randn_like(param)], state, [(1.0, 0.0)], compile=compile) is True
    expected = _reference(rule, dtype, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = _in_place(rule, dtype, 4, compile=compile)
    _assert_same(dtype, got[:2], expected)


def test_inputs_it_does_not_take_go_to_the_functional_step() -> None:
    def declines(rule: TinyRule, param: Tensor, grad: Tensor) -> bool:
        return rule.step_in_place([param], [grad], rule.join([rule.init_state(param)]), [(1.0, 0.0)]) is None

    plain = _rule("all", torch.float64)
    param = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        assert declines(plain, param.t(), torch.ones_like(param.t()))  # a parameter that is not contiguous
        assert declines(plain, param, torch.ones(4, 3))  # a gradient in another dtype
        assert not declines(plain, param, torch.ones_like(param))
    assert declines(plain, param, torch.ones_like(param))  # autograd on: the functional step
    with torch.no_grad(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiny_inplace, "EAGER_LEAST_PER_TENSOR", 13)  # 12 coordinates: too small for the eager path
        assert declines(plain, param, torch.ones_like(param))


def test_the_eager_path_is_taken_from_about_six_thousand_coordinates_per_tensor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shipped threshold: a transformer's list of tensors (a few large matrices among many vectors of its width)
    averaging about 8,000 coordinates takes the in-place step, one averaging about 3,000 the functional step."""
    monkeypatch.undo()  # the module's own threshold, not the fixture's 0
    assert 4096 < tiny_inplace.EAGER_LEAST_PER_TENSOR <= 8192

    def takes(width: int) -> bool:
        shapes = [(3 * width, width), (width, width), (4 * width, width), (width, 4 * width)] * 2 + [(width,)] * 10
        params = [torch.zeros(shape) for shape in shapes]
        rule = _rule("all", torch.float32)
        with torch.no_grad():
            state = rule.join([rule.init_state(p) for p in params])
            return (
                rule.step_in_place(params, [torch.ones_like(p) for p in params], state, [(1e-3, 0.0)] * 18) is not None
            )

    assert not takes(40)  # 2,155 coordinates per tensor
    assert takes(100)  # 13,389 per tensor


def test_a_compiler_failure_warns_once_and_runs_the_eager_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object):  # noqa: ANN202
        def fail(*a: object, **k: object) -> None:
            raise RuntimeError("no C++ compiler\nsecond line")

        return fail

    monkeypatch.setattr(tiny_inplace.torch, "compile", broken)
    monkeypatch.setattr(tiny_inplace, "_COMPILED", {})
    monkeypatch.setattr(tiny_inplace, "_FAILED", set())
    monkeypatch.setattr(tiny_inplace, "_WARNED", [])
    rule = _rule("all", torch.float64)
    expected = _reference(rule, torch.float64, 3)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler") as caught:
        got = _in_place(rule, torch.float64, 3, compile=True)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    _assert_same(torch.float64, got[:2], expected)


def test_copies_keep_the_compile_option() -> None:
    opt = LearnedOptimizer(_model(torch.float32).parameters(), rule=_rule("all", torch.float32), compile=True)
    assert copy.deepcopy(opt).compile and pickle.loads(pickle.dumps(opt)).compile
    assert not LearnedOptimizer([torch.zeros(2, requires_grad=True)], rule=_rule("all", torch.float32)).compile


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_a_compiled_training_step_around_the_compiled_rule_equals_eager(backend: str) -> None:
    dtype = torch.float32
    rule = _rule("hidden", dtype)
    models = [_model(dtype), _model(dtype)]
    opts = [LearnedOptimizer(m.parameters(), rule=rule, compile=True) for m in models]

    def train_step(model: nn.Module, opt: LearnedOptimizer, x: Tensor, y: Tensor) -> Tensor:
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    compiled = torch.compile(train_step, backend=backend)
    generator = torch.Generator().manual_seed(5)
    for _ in range(5):
        x, y = torch.randn(16, 3, 8, 8, generator=generator), torch.randn(16, 3, generator=generator)
        train_step(models[0], opts[0], x, y)
        compiled(models[1], opts[1], x, y)
    eager, traced = (torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in models)
    assert not torch.equal(eager, torch.cat([p.detach().reshape(-1) for p in _model(dtype).parameters()]))
    if backend == "eager":
        assert torch.equal(traced, eager)
    else:  # the compiled forward and backward round differently; the rule's state must not be dropped
        torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_an_accelerator_the_eager_step_takes_the_whole_vector_path() -> None:
    from metaopt.rules.tiny import TinyConfig, TinyRule
    from metaopt.rules.tiny_inplace import in_place_step

    rule = TinyRule(TinyConfig()).cuda()
    params = [torch.zeros(256, 256, device="cuda")]
    state = rule.join([rule.init_state(p) for p in params])
    assert in_place_step(rule, params, [torch.ones_like(params[0])], state, [(1.0, 0.0)]) is None


@pytest.mark.parametrize(("method", "compile"), [("auto", False), ("standard", False), ("gram", False), ("gram", True)])
def test_ns_method_reaches_both_steps_and_the_gram_form_gives_their_step(
    method: str, compile: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def spy(*args: object, **kwargs: object) -> Tensor:
        seen.append(str(kwargs["method"]))
        return muon.orthogonalize(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tiny, "orthogonalize", spy)
    monkeypatch.setattr(tiny_inplace, "orthogonalize", spy)
    dtype = torch.float64
    options = {"orthogonalize": True, "ns_block": 8}
    expected = _reference(_rule("all", dtype, **options), dtype, 3)  # the standard iterations (blocks of 8 rows)
    assert set(seen) == {"auto"}
    seen.clear()
    rule = _rule("all", dtype, **options, ns_method=method)
    got = _in_place(rule, dtype, 3, compile=compile)
    assert seen and set(seen) == {method}  # compiled: the spy runs when the step is traced
    _assert_same(dtype, got[:2], expected)  # in float64 the Gram form is the same step
    seen.clear()
    _reference(rule, dtype, 1)
    assert seen and set(seen) == {method}
