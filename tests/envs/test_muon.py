"""Muon on matrices and AdamW on the rest: torch's AdamW where no matrix is chosen, torch's Muon on 2D matrices (to
its bfloat16 rounding), the Newton-Schulz iteration's invariants, the choice of matrices, resuming."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from envs.training.functional import functional_from_spec
from envs.training.muon import GRAM_MIN_ROWS, MuonAdamW, gram_pays, orthogonalize
from envs.training.optim import get_optimizer_spec, make_optimizer


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 3))


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(16, 6, generator=generator), torch.randn(16, 3, generator=generator)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_with_no_matrix_chosen_it_is_adamw_bit_for_bit(weight_decay: float) -> None:
    ours, theirs = _model(), _model()
    _train(ours, MuonAdamW(ours.parameters(), lr=0.02, weight_decay=weight_decay, matrices="none"), 6)
    _train(theirs, torch.optim.AdamW(theirs.parameters(), lr=0.02, weight_decay=weight_decay, foreach=False), 6)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("momentum", "nesterov", "weight_decay"), [(0.95, True, 0.0), (0.8, False, 0.1)])
def test_on_matrices_it_is_torch_muon_to_its_bfloat16_rounding(momentum: float, nesterov: bool, weight_decay: float):
    torch.manual_seed(0)
    start = [torch.randn(24, 10), torch.randn(7, 30)]
    ours = [w.clone().requires_grad_() for w in start]
    theirs = [w.clone().requires_grad_() for w in start]
    lr = 0.01
    a = MuonAdamW(ours, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    b = torch.optim.Muon(theirs, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         adjust_lr_fn="match_rms_adamw")  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):  # gradients that change direction from step to step: the momentum's weighting shows
        grads = [torch.randn(w.shape, generator=generator) for w in start]
        for opt, ws in ((a, ours), (b, theirs)):
            for w, g in zip(ws, grads):
                w.grad = g.clone()
            opt.step()
    for w0, x, y in zip(start, ours, theirs):
        moved = (x - w0).norm()
        assert moved > 0.05  # five steps of about lr * 0.2 sqrt(max(A, B)) per coordinate
        assert (x - y).norm() <= 0.02 * moved  # bfloat16 Newton-Schulz in torch's, float32 here


@pytest.mark.parametrize("nesterov", [True, False])
def test_the_matrix_step_follows_muon_s_equations_in_float64(nesterov: bool) -> None:
    torch.manual_seed(3)
    w = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    expected, buffer = w.detach().clone(), torch.zeros(6, 9, dtype=torch.float64)
    lr, momentum = 0.03, 0.5
    opt = MuonAdamW([w], lr=lr, momentum=momentum, nesterov=nesterov)
    for _ in range(4):
        g = torch.randn(6, 9, dtype=torch.float64)
        w.grad = g.clone()
        opt.step()
        buffer = momentum * buffer + g  # B_t = mu B_{t-1} + g_t
        direction = g + momentum * buffer if nesterov else buffer
        expected = expected - lr * 0.2 * 9**0.5 * orthogonalize(direction)
        torch.testing.assert_close(w.detach(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 40), (40, 5), (16, 16), (3, 1)])
def test_newton_schulz_flattens_the_spectrum_and_keeps_the_singular_vectors(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    g = torch.randn(*shape) @ torch.diag(torch.logspace(0, -1, shape[1]))  # singular values over a decade
    o = orthogonalize(g)
    values = torch.linalg.svdvals(o)
    assert values.min() >= 0.6 and values.max() <= 1.25, values
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vh
    assert torch.nn.functional.cosine_similarity(o.flatten(), polar.flatten(), dim=0) >= 0.97


def test_newton_schulz_is_scale_free_and_commutes_with_transpose() -> None:
    torch.manual_seed(1)
    g = torch.randn(9, 14, dtype=torch.float64)
    assert torch.allclose(orthogonalize(1e4 * g), orthogonalize(g), rtol=1e-9, atol=1e-12)
    assert torch.allclose(orthogonalize(g.T), orthogonalize(g).T, rtol=1e-9, atol=1e-12)


def test_hidden_gives_the_first_and_last_matrices_adamw() -> None:
    ours, theirs = _model(), _model()
    groups = [{"params": (p for p in ours[:2].parameters())}, {"params": ours[2:].parameters()}]  # order across groups
    _train(ours, MuonAdamW(groups, lr=0.02, matrices="hidden"), 1)  # one step: same gradients in both
    _train(theirs, torch.optim.AdamW(theirs.parameters(), lr=0.02, weight_decay=0.0, foreach=False), 1)
    same = [torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters())]
    assert same == [True, True, False, True, True, True]  # only the middle weight matrix gets Muon's step


def test_a_convolution_kernel_is_orthogonalized_as_out_by_the_rest() -> None:
    torch.manual_seed(2)
    kernel = torch.randn(4, 3, 3, 3, requires_grad=True)
    start = kernel.detach().clone()
    opt = MuonAdamW([kernel], lr=0.1, momentum=0.0, nesterov=False)
    grad = torch.randn(4, 3, 3, 3)
    kernel.grad = grad.clone()
    opt.step()
    expected = start - 0.1 * 0.2 * 27**0.5 * orthogonalize(grad.reshape(4, 27)).reshape(4, 3, 3, 3)
    assert torch.allclose(kernel.detach(), expected, rtol=0, atol=1e-6)


def test_the_state_resumes_and_copies() -> None:
    whole, first = _model(), _model()
    opt_whole = MuonAdamW(whole.parameters(), lr=0.01)
    _train(whole, opt_whole, 6)
    opt_first = MuonAdamW(first.parameters(), lr=0.01)
    _train(first, opt_first, 3)
    resumed = copy.deepcopy(first)
    opt_resumed = MuonAdamW(resumed.parameters(), lr=0.01)
    opt_resumed.load_state_dict(pickle.loads(pickle.dumps(opt_first.state_dict())))
    generator = torch.Generator().manual_seed(1)  # the last three steps see the batches of steps 4-6
    for _ in range(3):
        torch.randn(16, 6, generator=generator), torch.randn(16, 3, generator=generator)
    for _ in range(3):
        x, y = torch.randn(16, 6, generator=generator), torch.randn(16, 3, generator=generator)
        opt_resumed.zero_grad()
        ((resumed(x) - y) ** 2).mean().backward()
        opt_resumed.step()
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_registered_and_refuses_bad_options() -> None:
    model = _model()
    assert isinstance(make_optimizer("muon", model.parameters(), lr=0.01), MuonAdamW)
    with pytest.raises(ValueError, match="matrices must be one of all, hidden, none"):
        MuonAdamW(model.parameters(), matrices="some")
    with pytest.raises(ValueError, match="ns_steps"):
        MuonAdamW(model.parameters(), ns_steps=0)


def test_a_batch_of_matrices_is_orthogonalized_each_on_its_own() -> None:
    torch.manual_seed(4)
    for shape in ((3, 5, 8), (3, 8, 5)):
        batch = torch.randn(*shape, dtype=torch.float64)
        torch.testing.assert_close(orthogonalize(batch), torch.stack([orthogonalize(m) for m in batch]),
                                   rtol=1e-12, atol=1e-12)  # fmt: skip


@pytest.mark.parametrize(("matrices", "weight_decay", "nesterov"), [("all", 0.0, True), ("hidden", 0.05, False)])
def test_the_functional_twin_follows_the_optimizer_run_by_run(matrices: str, weight_decay: float, nesterov: bool):
    from torch.func import functional_call, grad, vmap

    lrs = [0.003, 0.01, 0.03]
    options = {"matrices": matrices, "weight_decay": weight_decay, "nesterov": nesterov}
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randn(32, 3, dtype=torch.float64)
    skeleton = _model().double()
    twin = functional_from_spec(get_optimizer_spec("muon"), options)
    assert twin is not None
    params = {name: p.detach().expand(len(lrs), *p.shape).clone() for name, p in skeleton.named_parameters()}

    def loss(p: dict) -> torch.Tensor:
        return ((functional_call(skeleton, p, (x,)) - y) ** 2).mean()

    state, lr = twin.init(params), torch.tensor(lrs, dtype=torch.float64)
    for step in range(1, 7):
        params, state = twin.update(params, vmap(grad(loss))(params), state, lr, step)
    for i, rate in enumerate(lrs):
        model = _model().double()
        opt = MuonAdamW(model.parameters(), lr=rate, **options)
        for _ in range(6):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
        for name, p in model.named_parameters():
            torch.testing.assert_close(params[name][i], p.detach(), rtol=1e-9, atol=1e-11, msg=f"{name}, lr={rate}")


@pytest.mark.parametrize("shape", [(10, 23), (23, 10), (12, 12), (3, 10, 23)])
def test_in_blocks_each_group_of_the_shorter_side_is_orthogonalized_on_its_own(shape: tuple[int, ...]) -> None:
    torch.manual_seed(5)
    g = torch.randn(*shape, dtype=torch.float64)
    wide = shape[-2] <= shape[-1]
    x = g if wide else g.mT  # the shorter side as rows
    expected = torch.cat([orthogonalize(part) for part in x.split(4, dim=-2)], dim=-2)  # groups 4, 4, (...), rest
    blocked = orthogonalize(g, block=4)
    torch.testing.assert_close(blocked if wide else blocked.mT, expected, rtol=1e-12, atol=1e-12)
    for part in x.split(4, dim=-2):  # each group's rows near orthonormal, whatever the others
        values = torch.linalg.svdvals(orthogonalize(part))
        assert values.min() >= 0.6 and values.max() <= 1.25
    rows = (blocked if wide else blocked.mT).reshape(-1, *x.shape[-2:])[0]
    across = rows[:4] @ rows[4:8].T  # two groups are not orthogonal to each other
    assert across.abs().max() > 0.05


def test_a_block_as_long_as_the_shorter_side_changes_nothing() -> None:
    torch.manual_seed(6)
    g = torch.randn(8, 30)
    assert torch.equal(orthogonalize(g, block=8), orthogonalize(g))
    assert torch.equal(orthogonalize(g.T, block=64), orthogonalize(g.T))
    assert not torch.allclose(orthogonalize(g, block=7), orthogonalize(g), atol=1e-3)


@pytest.mark.parametrize("shape", [(10, 23), (23, 10), (3, 10, 23)])
def test_in_bfloat16_the_iterations_round_to_bfloat16_and_the_result_keeps_the_dtype(shape: tuple[int, ...]) -> None:
    torch.manual_seed(7)
    g = torch.randn(*shape)
    got = orthogonalize(g, dtype=torch.bfloat16, block=4)
    assert got.dtype == torch.float32
    assert torch.equal(got, orthogonalize(g.bfloat16(), block=4).float())  # the iterations in bfloat16, then cast
    exact = orthogonalize(g, block=4)
    assert not torch.equal(got, exact)
    assert (got - exact).norm() <= 0.03 * exact.norm()  # bfloat16's rounding, no more
    assert torch.equal(orthogonalize(g, dtype=torch.float32), orthogonalize(g))  # its own dtype: nothing changes


@pytest.mark.parametrize("shape", [(9, 30), (30, 9), (6, 6), (2, 5, 17), (1, 3)])
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_the_gram_form_is_the_standard_iteration_in_exact_arithmetic(shape: tuple[int, ...], steps: int) -> None:
    torch.manual_seed(8)
    g = torch.randn(*shape, dtype=torch.float64) @ torch.diag(torch.logspace(0, -1, shape[-1])).double()
    gram = orthogonalize(g, steps, method="gram")
    torch.testing.assert_close(gram, orthogonalize(g, steps, method="standard"), rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(orthogonalize(g, steps, block=4, method="gram"),
                               orthogonalize(g, steps, block=4, method="standard"), rtol=1e-11, atol=1e-12)  # fmt: skip


def test_the_gram_form_is_differentiable_as_the_standard_iteration() -> None:
    torch.manual_seed(9)
    g = torch.randn(7, 19, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(7, 19, dtype=torch.float64)
    grads = [torch.autograd.grad((orthogonalize(g, method=m) * weights).sum(), g)[0] for m in ("gram", "standard")]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-11)


def test_auto_takes_the_gram_form_only_on_wide_float_matrices_of_enough_rows() -> None:
    torch.manual_seed(10)
    m = GRAM_MIN_ROWS
    for shape, expected in (((m, 2 * m), True), ((2 * m, m), True), ((3, m, 2 * m + 1), True), ((m, 2 * m - 1), False),
                            ((m - 1, 4 * m), False), ((2 * m, 2 * m), False)):  # fmt: skip
        g = torch.randn(*shape)
        x = g if shape[-2] <= shape[-1] else g.mT
        assert gram_pays(x) is expected, shape
        picked = "gram" if expected else "standard"
        assert torch.equal(orthogonalize(g), orthogonalize(g, method=picked)), shape
        other = "standard" if expected else "gram"
        assert not torch.equal(orthogonalize(g), orthogonalize(g, method=other)), shape  # the two round differently
    assert not gram_pays(torch.randn(m, 4 * m).bfloat16())
    wide = torch.randn(2 * m + 5, 4 * m)  # blocks of m rows: each block is m x 4m, Gram; the 5 rows left: standard
    blocks = orthogonalize(wide, block=m)
    expected_parts = [orthogonalize(wide[:m], method="gram"), orthogonalize(wide[m:2 * m], method="gram"),
                      orthogonalize(wide[2 * m:], method="standard")]  # fmt: skip
    torch.testing.assert_close(blocks, torch.cat(expected_parts), rtol=0, atol=1e-6)


def test_in_float32_the_gram_form_stays_within_its_documented_rounding() -> None:
    torch.manual_seed(11)
    m, n = GRAM_MIN_ROWS, 3 * GRAM_MIN_ROWS
    u, _ = torch.linalg.qr(torch.randn(m, m, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, m, dtype=torch.float64))
    for spectrum in (torch.ones(m), torch.logspace(0, -8, m)):  # well and badly conditioned
        g = (u * spectrum.double()) @ v.T
        exact = orthogonalize(g)
        for method, bound in (("standard", 5e-5), ("gram", 5e-4)):
            got = orthogonalize(g.float(), method=method).double()
            assert (got - exact).norm() <= bound * exact.norm(), (method, spectrum[-1])


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="method must be one of auto, standard, gram"):
        orthogonalize(torch.randn(3, 4), method="svd")
