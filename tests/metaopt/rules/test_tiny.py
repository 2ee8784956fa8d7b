"""The tiny normalised rule: scale-free updates, muP step sizes, the hybrid's AdamW is AdamW, frozen tensors stay,
meta-gradients equal finite differences, PES agrees with backprop, and the scheduler's second stage."""

from __future__ import annotations

import copy
import math

import higher
import pytest
import torch
from torch import Tensor, nn

import envs
from envs.errors import ConfigError
from envs.tooling.config import load_config
from metaopt import LearnedOptimizer, TrainConfig, optimizee_loss, start_episode, unroll
from metaopt.checkpoint import load_net, save_checkpoint
from metaopt.inner import Trajectory
from metaopt.outer import ESConfig, EstimatorSetup, PersistentES
from metaopt.rules import TinyConfig, TinyRule, make_rule
from metaopt.rules.scheduler import scheduler_features
from metaopt.rules.tiny import learned_tensor_mask
from tests.metaopt.sizes import TINY_TRAIN


def perturbed(config: TinyConfig, seed: int = 0) -> TinyRule:
    """A float64 rule whose MLP matters as much as its skip (as after meta-training), and whose scheduler is not 1."""
    torch.manual_seed(seed)
    rule = TinyRule(config).double()
    with torch.no_grad():
        rule.w_out.normal_(0, 1.0)
        rule.w_time.mul_(3)
        if rule.schedule is not None:
            rule.schedule.w2.normal_(0, 1.0)
    return rule


def mlp(width: int = 6, depth: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    sizes = [5] + [width] * depth + [2]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).double()


def data(seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 5, generator=g, dtype=torch.float64), torch.randn(64, 2, generator=g, dtype=torch.float64)


def trajectory(model: nn.Module, opt: torch.optim.Optimizer, steps: int, scale: float = 1.0,
               frozen: int | None = None) -> list[Tensor]:  # fmt: skip
    """The flat parameters after each of ``steps`` steps on a fixed regression; ``frozen``: that tensor's grads zero."""
    x, y = data()
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (scale * ((model(x) - y) ** 2).mean()).backward()
        if frozen is not None:
            list(model.parameters())[frozen].grad.zero_()
        opt.step()
        out.append(torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()]))
    return out


FULL = TinyConfig(scheduler=True, param_scale=True, step_size=0.05)
ORTHO = TinyConfig(scheduler=True, param_scale=True, step_size=0.05, orthogonalize=True)
ADAPT = TinyConfig(scheduler=True, param_scale=True, step_size=0.05, adapt_rate=0.3, weight_decay=0.2)


@pytest.mark.parametrize("config", [FULL, ORTHO, ADAPT], ids=["plain", "orthogonalized", "adapted"])
@pytest.mark.parametrize("scale", [1e-3, 37.0, 1e4])
def test_scaling_the_loss_leaves_the_sequence_of_updates_unchanged(scale: float, config: TinyConfig) -> None:
    rule = perturbed(config)
    base_model, scaled_model = mlp(), mlp()
    base = trajectory(base_model, LearnedOptimizer(base_model.parameters(), rule=rule), 15)
    scaled = trajectory(scaled_model, LearnedOptimizer(scaled_model.parameters(), rule=rule), 15, scale)
    assert (base[-1] - base[0]).abs().max() > 1e-3  # it moves
    for a, b in zip(base, scaled):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_a_tensor_s_update_size_follows_mup_across_widths() -> None:
    rule = perturbed(TinyConfig(base_fan_in=64, step_size=0.01))
    sizes = {}
    for fan_in in (32, 128):
        params = [torch.randn(16, fan_in, dtype=torch.float64), torch.randn(16, dtype=torch.float64)]
        grads = torch.randn(sum(p.numel() for p in params), dtype=torch.float64)
        update, _ = rule.step(grads, rule.join([rule.init_state(p) for p in params]), params)
        matrix, vector = update.split([p.numel() for p in params])
        sizes[fan_in] = (matrix.pow(2).mean().sqrt().item(), vector.pow(2).mean().sqrt().item())
    # per-coordinate RMS: step_size * base_fan_in / fan_in for matrices, step_size for vectors, at any width
    assert sizes[32][0] == pytest.approx(0.01 * 64 / 32, rel=1e-9)
    assert sizes[128][0] == pytest.approx(0.01 * 64 / 128, rel=1e-9)
    assert sizes[32][1] == pytest.approx(0.01, rel=1e-9) and sizes[128][1] == pytest.approx(0.01, rel=1e-9)


def test_orthogonalize_flattens_each_matrix_s_spectrum_and_keeps_its_size_and_the_vectors_updates() -> None:
    torch.manual_seed(3)
    params = [torch.randn(12, 40, dtype=torch.float64), torch.randn(12, dtype=torch.float64),
              torch.randn(3, 2, 2, 5, dtype=torch.float64)]  # fmt: skip
    sizes = [p.numel() for p in params]

    def gradient() -> Tensor:  # matrices dominated by one direction: the plain update is nearly rank one
        pieces = [torch.outer(torch.randn(len(p)), torch.randn(p[0].numel())) + 0.3 * torch.randn(len(p), p[0].numel())
                  if p.dim() >= 2 else torch.randn(p.shape) for p in params]  # fmt: skip
        return torch.cat([piece.reshape(-1) for piece in pieces]).double()

    grads = [gradient() for _ in range(3)]
    updates = {}
    for orthogonalize in (False, True):
        rule = perturbed(TinyConfig(orthogonalize=orthogonalize, step_size=0.01))
        state = rule.join([rule.init_state(p) for p in params])
        for g in grads:
            update, state = rule.step(g, state, params)
        updates[orthogonalize] = update.split(sizes)
    for index, rows in ((0, 12), (2, 3)):
        plain, ortho = (updates[o][index].view(rows, -1) for o in (False, True))
        spread = torch.linalg.svdvals(ortho)
        assert spread.max() / spread.min() <= 2.0 < (lambda s: s.max() / s.min())(torch.linalg.svdvals(plain))
        assert ortho.pow(2).mean().sqrt().item() == pytest.approx(plain.pow(2).mean().sqrt().item(), rel=1e-9)
        assert torch.nn.functional.cosine_similarity(ortho.flatten(), plain.flatten(), dim=0) > 0.5
    assert torch.equal(updates[True][1], updates[False][1])  # a vector's update is the plain rule's
    rule = perturbed(TinyConfig(orthogonalize=True))
    assert rule.step_in_place(params, params, {}, [(1.0, 0.0)] * 3) is None  # the shell runs the generic step


def test_ns_matrices_hidden_leaves_the_first_and_last_matrix_to_the_plain_direction() -> None:
    torch.manual_seed(5)
    params = [torch.randn(6, 3, 2, 2, dtype=torch.float64), torch.randn(6, dtype=torch.float64),
              torch.randn(9, 24, dtype=torch.float64), torch.randn(7, 9, dtype=torch.float64),
              torch.randn(3, 7, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]  # fmt: skip
    sizes = [p.numel() for p in params]
    grads = [torch.randn(sum(sizes), dtype=torch.float64) for _ in range(3)]
    updates = {}
    for name, options in (("plain", {}), ("all", {"orthogonalize": True}),
                          ("hidden", {"orthogonalize": True, "ns_matrices": "hidden"})):  # fmt: skip
        rule = perturbed(TinyConfig(step_size=0.01, adapt_rate=0.2, weight_decay=0.5, **options))
        state = rule.join([rule.init_state(p) for p in params])
        for g in grads:
            update, state = rule.step(g, state, params)
        updates[name] = update.split(sizes)
    for index, expected in ((0, "plain"), (1, "plain"), (2, "all"), (3, "all"), (4, "plain"), (5, "plain")):
        torch.testing.assert_close(updates["hidden"][index], updates[expected][index], rtol=1e-12, atol=1e-15)
    assert not torch.allclose(updates["all"][0], updates["plain"][0])  # the first matrix is orthogonalized by "all"
    assert not torch.allclose(updates["all"][4], updates["plain"][4])  # and so is the last


def rms_per_tensor(update: Tensor, sizes: list[int]) -> list[float]:
    return [piece.pow(2).mean().sqrt().item() for piece in update.split(sizes)]


def test_the_step_size_adaptation_follows_the_cosine_of_each_gradient_with_the_last_update() -> None:
    rule = perturbed(TinyConfig(step_size=0.01, adapt_rate=0.2, adapt_limit=3.0))
    params = [torch.randn(16, 64, dtype=torch.float64), torch.randn(16, dtype=torch.float64)]  # muP factor 1 both
    sizes = [p.numel() for p in params]
    state = rule.join([rule.init_state(p) for p in params])
    g = torch.Generator().manual_seed(4)
    drift = torch.randn(sum(sizes), generator=g, dtype=torch.float64)
    expected, last = [0.0, 0.0], None
    for _ in range(12):
        grads = drift + 0.7 * torch.randn(sum(sizes), generator=g, dtype=torch.float64)
        if last is not None:
            for i, (gi, ui) in enumerate(zip(grads.split(sizes), last.split(sizes))):
                cosine = (gi @ ui / (gi.norm() * ui.norm())).item()
                expected[i] = min(max(expected[i] - 0.2 * cosine, -math.log(3.0)), math.log(3.0))
        update, state = rule.step(grads, state, params)
        for size, log_factor in zip(rms_per_tensor(update, sizes), expected):
            assert size == pytest.approx(0.01 * math.exp(log_factor), rel=1e-9)
        last = update
    assert max(abs(e) for e in expected) > 0.1  # it adapted


@pytest.mark.parametrize(("sign", "factor"), [(1.0, 3.0), (-1.0, 1 / 3.0)])
def test_a_steady_gradient_lengthens_the_step_to_its_limit_and_an_alternating_one_shortens_it(
    sign: float, factor: float
) -> None:
    rule = TinyRule(TinyConfig(step_size=0.01, adapt_rate=0.5, adapt_limit=3.0)).double()  # a normalised Adam
    params = [torch.randn(8, 64, dtype=torch.float64), torch.randn(8, dtype=torch.float64)]
    sizes = [p.numel() for p in params]
    state = rule.join([rule.init_state(p) for p in params])
    grads = torch.randn(sum(sizes), dtype=torch.float64)
    for t in range(10):
        update, state = rule.step(grads * sign**t, state, params)
    assert rms_per_tensor(update, sizes) == pytest.approx([0.01 * factor] * 2, rel=1e-9)


def test_weight_decay_subtracts_the_rate_times_each_tensor_s_step_size_times_the_weights() -> None:
    params = [torch.randn(16, 32, dtype=torch.float64), torch.randn(16, dtype=torch.float64)]  # muP factors 2 and 1
    sizes = [p.numel() for p in params]
    grads = torch.randn(sum(sizes), dtype=torch.float64)
    updates = {}
    for decay in (0.0, 0.7):
        rule = perturbed(TinyConfig(step_size=0.01, scheduler=True, weight_decay=decay))  # a scheduler factor != 1
        state = rule.join([rule.init_state(p) for p in params])
        for _ in range(3):
            update, state = rule.step(grads, state, params)
        updates[decay] = update.split(sizes)
    for plain, decayed, p in zip(updates[0.0], updates[0.7], params):
        step_size = plain.pow(2).mean().sqrt()  # the normalised direction's size is the tensor's step size
        torch.testing.assert_close(decayed - plain, -0.7 * step_size * p.reshape(-1), rtol=1e-9, atol=1e-15)


def test_without_the_mup_factor_the_decay_is_the_same_per_step_at_every_width() -> None:
    params = [torch.randn(16, 256, dtype=torch.float64), torch.randn(16, dtype=torch.float64)]  # muP factors 1/4, 1
    sizes = [p.numel() for p in params]
    grads = torch.randn(sum(sizes), dtype=torch.float64)
    updates = {}
    for decay, follows_mup in ((0.0, True), (0.7, True), (0.7, False)):
        config = TinyConfig(step_size=0.01, mup_cap=True, weight_decay=decay, weight_decay_mup=follows_mup)
        rule = perturbed(config)
        state = rule.join([rule.init_state(p) for p in params])
        for _ in range(3):
            update, state = rule.step(grads, state, params)
        updates[decay, follows_mup] = update.split(sizes)
    for t, (mup, p) in enumerate(zip((0.25, 1.0), params)):
        plain = updates[0.0, True][t]
        step_size = plain.pow(2).mean().sqrt()
        torch.testing.assert_close(updates[0.7, True][t] - plain, -0.7 * step_size * p.reshape(-1), rtol=1e-9,
                                   atol=1e-15)  # fmt: skip
        torch.testing.assert_close(updates[0.7, False][t] - plain, -0.7 * step_size / mup * p.reshape(-1), rtol=1e-9,
                                   atol=1e-15)  # fmt: skip


def test_with_weight_decay_a_steady_push_leaves_the_weights_at_root_mean_square_one_over_the_decay() -> None:
    rule = TinyRule(TinyConfig(step_size=0.05, weight_decay=2.0, param_feature=False)).double()
    p = torch.zeros(8, 64, dtype=torch.float64)
    state = rule.join([rule.init_state(p)])
    grads = torch.randn(p.numel(), dtype=torch.float64)
    for _ in range(400):
        update, state = rule.step(grads, state, [p])
        p = p + update.view_as(p)
    assert p.pow(2).mean().sqrt().item() == pytest.approx(1 / 2.0, rel=1e-3)


def test_the_optimizer_with_adaptation_and_decay_equals_the_rule_s_own_step() -> None:
    rule = perturbed(TinyConfig(adapt_rate=0.3, weight_decay=0.2, step_size=0.05))
    model = mlp()
    params = [p.detach().clone() for p in model.parameters()]
    moved = trajectory(model, LearnedOptimizer(model.parameters(), rule=rule), 6)
    state = rule.join([rule.init_state(p) for p in params])
    x, y = data()
    for after in moved:
        for p in params:
            p.requires_grad_(True)
        grads = torch.autograd.grad(((torch.func.functional_call(mlp(), dict(zip(
            [n for n, _ in mlp().named_parameters()], params)), (x,)) - y) ** 2).mean(), params)  # fmt: skip
        update, state = rule.step(torch.cat([g.reshape(-1) for g in grads]), state, params)
        params = [(p.detach() + u.view_as(p)) for p, u in zip(params, update.split([p.numel() for p in params]))]
        torch.testing.assert_close(torch.cat([p.reshape(-1) for p in params]), after, rtol=1e-12, atol=1e-12)


def test_with_mup_cap_a_small_fan_in_keeps_the_base_step_and_a_large_one_still_shrinks() -> None:
    sizes = {}
    for cap in (False, True):
        rule = perturbed(TinyConfig(base_fan_in=64, step_size=0.01, mup_cap=cap))
        for fan_in in (4, 16, 128):
            params = [torch.randn(8, fan_in, dtype=torch.float64)]
            grads = torch.randn(params[0].numel(), dtype=torch.float64)
            update, _ = rule.step(grads, rule.join([rule.init_state(p) for p in params]), params)
            sizes[cap, fan_in] = update.pow(2).mean().sqrt().item()
    assert sizes[False, 4] == pytest.approx(0.01 * 16, rel=1e-9) and sizes[False, 16] == pytest.approx(0.04, rel=1e-9)
    assert sizes[True, 4] == pytest.approx(0.01, rel=1e-9) and sizes[True, 16] == pytest.approx(0.01, rel=1e-9)
    assert sizes[True, 128] == pytest.approx(0.005, rel=1e-9) == sizes[False, 128]


def test_in_a_model_the_hidden_matrices_update_scales_as_one_over_width() -> None:
    rule = perturbed(TinyConfig(learned_tensors="hidden"))
    rms = []
    for width in (8, 32):
        model = mlp(width)
        trajectory(model, LearnedOptimizer(model.parameters(), rule=rule), 1)
        before = mlp(width)
        hidden = [(a - b) for a, b in zip(model.parameters(), before.parameters())][2]  # the second matrix
        rms.append(hidden.pow(2).mean().sqrt().item())
    assert rms[0] / rms[1] == pytest.approx(32 / 8, rel=1e-9)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_with_the_learned_part_off_it_is_adamw_step_for_step(weight_decay: float) -> None:
    cfg = TinyConfig(learned_tensors="none", adamw_lr=0.02, adamw_betas=[0.8, 0.99], adamw_eps=1e-6,
                     adamw_weight_decay=weight_decay, scheduler=False)  # fmt: skip
    ours, reference = mlp(), mlp()
    rule = TinyRule(cfg).double()
    mine = trajectory(ours, LearnedOptimizer(ours.parameters(), rule=rule), 30)
    adamw = torch.optim.AdamW(reference.parameters(), lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    theirs = trajectory(reference, adamw, 30)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_the_hybrid_gives_adamw_the_other_tensors_and_the_rule_the_hidden_matrices() -> None:
    shapes = [(6, 5), (6,), (6, 6), (6,), (6, 6), (6,), (2, 6), (2,)]
    assert learned_tensor_mask(shapes, "hidden") == [False, False, True, False, True, False, False, False]
    assert learned_tensor_mask(shapes[:4], "hidden") == [False] * 4  # two matrices: first and last, none hidden
    hybrid = perturbed(TinyConfig(learned_tensors="hidden", adamw_lr=0.01))
    adamw = TinyRule(TinyConfig(learned_tensors="none", adamw_lr=0.01)).double()
    learned = perturbed(TinyConfig(learned_tensors="all"))
    params = [torch.randn(s, dtype=torch.float64) for s in shapes]
    mask = torch.cat([torch.full((p.numel(),), m) for p, m in zip(params, learned_tensor_mask(shapes, "hidden"))])
    states = [r.join([r.init_state(p) for p in params]) for r in (hybrid, adamw, learned)]
    for _ in range(3):
        grads = torch.randn(sum(p.numel() for p in params), dtype=torch.float64)
        (ours, states[0]), (plain, states[1]), (rule, states[2]) = (
            r.step(grads, s, params) for r, s in zip((hybrid, adamw, learned), states)
        )
        torch.testing.assert_close(ours[~mask], plain[~mask], rtol=1e-12, atol=0)
        assert not torch.allclose(ours[mask], plain[mask])
        # the learned coordinates are normalised over their own tensors: the learned rule's update on them
        assert torch.isfinite(ours).all() and ours[mask].abs().max() > 0
    del rule


@pytest.mark.parametrize(("learned_tensors", "orthogonalize", "adapt_rate"),
                         [("all", False, 0.0), ("hidden", False, 0.0), ("none", False, 0.0), ("all", True, 0.0),
                          ("hidden", False, 0.3)])  # fmt: skip
def test_zero_gradients_from_the_first_step_leave_a_frozen_tensor_where_it_is(
    learned_tensors: str, orthogonalize: bool, adapt_rate: float
) -> None:
    rule = perturbed(TinyConfig(learned_tensors=learned_tensors, scheduler=True, param_scale=True,
                                orthogonalize=orthogonalize, adapt_rate=adapt_rate,
                                weight_decay=adapt_rate))  # fmt: skip
    for frozen in (0, 2, 3):
        model = mlp()
        start = [p.detach().clone() for p in model.parameters()]
        trajectory(model, LearnedOptimizer(model.parameters(), rule=rule), 12, frozen=frozen)
        after = list(model.parameters())
        assert torch.equal(after[frozen], start[frozen])
        assert any(not torch.equal(a, b) for a, b in zip(after, start))  # the rest moves


def test_zero_gradients_leave_the_parameters_in_the_higher_unroll_too() -> None:
    rule = perturbed(TinyConfig(learned_tensors="hidden", scheduler=True))
    model = mlp()
    start = [p.detach().clone() for p in model.parameters()]
    opt = LearnedOptimizer(model.parameters(), rule=rule)
    with higher.innerloop_ctx(model, opt, copy_initial_weights=True) as (fmodel, diffopt):
        x, _ = data()
        for _ in range(4):
            diffopt.step(0.0 * fmodel(x).sum())  # every gradient is zero from the first step
        for a, b in zip(fmodel.parameters(), start):
            assert torch.equal(a, b)


def meta_loss(rule: TinyRule, steps: int = 4) -> Tensor:
    task = envs.make_task("digits_mlp", width=4, depth=2, activation="tanh", batch_size=32, dtype="float64")
    return optimizee_loss(unroll(start_episode(task, seed=3, rule=rule), steps, first_order=False))


@pytest.mark.parametrize(
    ("learned_tensors", "orthogonalize", "adapt_rate"),
    [("all", False, 0.0), ("hidden", False, 0.0), ("all", True, 0.0), ("hidden", False, 0.3)],
)
def test_meta_gradients_through_higher_match_central_differences(
    learned_tensors: str, orthogonalize: bool, adapt_rate: float
) -> None:
    rule = perturbed(TinyConfig(learned_tensors=learned_tensors, scheduler=True, step_size=0.05, adamw_lr=0.05,
                                orthogonalize=orthogonalize, adapt_rate=adapt_rate,
                                weight_decay=adapt_rate))  # fmt: skip
    meta_loss(rule).backward()
    eps, checked = 1e-6, 0
    for name, param in rule.named_parameters():
        if param.grad is None:
            continue
        flat, grad = param.data.view(-1), param.grad.view(-1)
        index = int(grad.abs().argmax())
        original = flat[index].item()
        flat[index] = original + eps
        plus = meta_loss(rule).item()
        flat[index] = original - eps
        minus = meta_loss(rule).item()
        flat[index] = original
        assert grad[index].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-4, abs=1e-8), name
        checked += 1
    assert checked >= 8


T, TRUNCATIONS = 4, 3


def pes_task() -> envs.Task:
    return envs.make_task("quadratic", dim=3, init_std=0.5, dtype="float64")


def small_rule() -> TinyRule:
    return perturbed(TinyConfig(hidden_size=2, num_layers=1, momentum_decays=[0.5], param_feature=False,
                                time_scales=[2.0], step_size=0.05), seed=2)  # fmt: skip


def test_pes_agrees_with_backprop_through_the_whole_episode_in_expectation() -> None:
    rule = small_rule()
    inner = start_episode(pes_task(), 3, rule)
    whole = unroll(inner, T * TRUNCATIONS, first_order=False)
    windows = [Trajectory(whole.losses[k * T : (k + 1) * T + 1], whole.iterates[k * T : (k + 1) * T + 1], k * T)
               for k in range(TRUNCATIONS)]  # fmt: skip
    weights = list(rule.parameters())
    grads = torch.autograd.grad(sum(optimizee_loss(w) for w in windows), weights, allow_unused=True)
    exact = torch.cat([(torch.zeros_like(w) if g is None else g).reshape(-1) for g, w in zip(grads, weights)])
    runs = []
    for repeat in range(24):
        estimator = PersistentES(ESConfig(pairs=16, sigma=0.005), EstimatorSetup(T, optimizee_loss, seed=repeat))
        inner = start_episode(pes_task(), 3, rule)
        total = torch.zeros_like(exact)
        for k in range(TRUNCATIONS):
            total += torch.cat([g.reshape(-1) for g in estimator.estimate(rule, [inner], meta_step=k).grads])
        runs.append(total)
    stacked = torch.stack(runs)
    mean, se = stacked.mean(0), stacked.std(0) / math.sqrt(len(runs))
    resolved = exact.abs() > 8 * se  # the step size's gradient dominates; the others are inside the noise
    assert int(resolved.sum()) >= 1
    assert bool(((mean - exact).abs() <= 4 * se).all()), (mean, se, exact)
    assert bool(((mean - exact).abs() <= 0.2 * exact.abs())[resolved].all())


def test_the_vmap_population_runs_the_rule_as_the_loop_does() -> None:
    rule = perturbed(TinyConfig(learned_tensors="hidden", scheduler=True, step_size=0.05))
    task = envs.make_task("digits_mlp", width=4, depth=2, activation="tanh", batch_size=32, dtype="float64")
    estimates = []
    for population in ("loop", "vmap"):
        estimator = PersistentES(ESConfig(pairs=2, population=population), EstimatorSetup(T, optimizee_loss, seed=1))
        inner = start_episode(task, 3, rule)
        estimates.append([estimator.estimate(rule, [inner], meta_step=k).grads for k in range(2)])
    for loop, vmap in zip(*estimates):
        for a, b in zip(loop, vmap):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_a_second_stage_trains_the_scheduler_alone_from_a_checkpoint(tmp_path) -> None:  # noqa: ANN001
    first = perturbed(TinyConfig(scheduler=True)).float()
    save_checkpoint(tmp_path / "stage1.pt", first)
    second = TinyRule(TinyConfig(scheduler=True, train="scheduler", init_from=str(tmp_path / "stage1.pt")))
    assert {n for n, _ in second.named_parameters()} == {"schedule.w1", "schedule.b1", "schedule.w2", "schedule.b2"}
    assert second.state_dict().keys() == first.state_dict().keys()
    assert all(torch.equal(second.state_dict()[k], first.state_dict()[k]) for k in first.state_dict())
    save_checkpoint(tmp_path / "stage2.pt", second)
    loaded = load_net(tmp_path / "stage2.pt")  # rebuilds from its own config (init_from read again), then its weights
    assert isinstance(loaded, TinyRule) and all(
        torch.equal(loaded.state_dict()[k], second.state_dict()[k]) for k in first.state_dict()
    )
    with pytest.raises(ConfigError, match="train"):
        TinyConfig(train="scheduler")
    with pytest.raises(ValueError, match="mlp"):
        save_checkpoint(tmp_path / "mlp.pt", make_rule("mlp"))
        TinyRule(TinyConfig(scheduler=True, train="scheduler", init_from=str(tmp_path / "mlp.pt")))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("rule.options={learned_tensors: most}", "rule.options.learned_tensors"),
        ("rule.options={adamw_betas: [0.9]}", "rule.options.adamw_betas"),
        ("rule.options={step_size: 0}", "rule.options.step_size"),
        ("rule.options={train: scheduler}", "rule.options.train"),
        ("rule.options={orthogonalize: true, ns_steps: 0}", "rule.options.ns_steps"),
        ("rule.options={orthogonalize: true, ns_block: -1}", "rule.options.ns_block"),
        ("rule.options={orthogonalize: true, ns_dtype: float8}", "rule.options.ns_dtype"),
        ("rule.options={orthogonalize: true, ns_method: svd}", "rule.options.ns_method"),
        ("rule.options={orthogonalize: true, ns_matrices: first}", "rule.options.ns_matrices"),
        ("rule.options={adapt_rate: -0.1}", "rule.options.adapt_rate"),
        ("rule.options={adapt_rate: 0.1, adapt_limit: 0.5}", "rule.options.adapt_limit"),
        ("rule.options={weight_decay: -1}", "rule.options.weight_decay"),
    ],
)
def test_bad_options_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(TrainConfig, "metaopt/quadratic.yaml", [*TINY_TRAIN, "rule=tiny", override])


@pytest.mark.parametrize("adapt_rate", [0.0, 0.3])
def test_state_round_trips_through_state_dict(adapt_rate: float) -> None:
    rule = perturbed(TinyConfig(learned_tensors="hidden", scheduler=True, adapt_rate=adapt_rate))
    model = mlp()
    twin = copy.deepcopy(model)
    opt = LearnedOptimizer(model.parameters(), rule=rule)
    trajectory(model, opt, 3)
    state = copy.deepcopy(opt.state_dict())
    other = LearnedOptimizer(twin.parameters(), rule=rule)
    twin.load_state_dict(model.state_dict())
    other.load_state_dict(state)
    assert trajectory(model, opt, 2)[-1].equal(trajectory(twin, other, 2)[-1])


def test_an_untrained_scheduler_multiplies_by_one_and_its_features_track_the_gradient_since_the_first_step() -> None:
    torch.manual_seed(5)
    plain = TinyRule(TinyConfig(step_size=0.05)).double()
    torch.manual_seed(5)
    scheduled = TinyRule(TinyConfig(step_size=0.05, scheduler=True)).double()
    runs = []
    for rule in (plain, scheduled):
        model = mlp()
        runs.append(trajectory(model, LearnedOptimizer(model.parameters(), rule=rule), 5))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    steps = torch.tensor([1.0, 1.0], dtype=torch.float64)
    inv_scales = torch.tensor([[0.1], [0.01]], dtype=torch.float64)
    first = scheduler_features(steps, inv_scales, torch.tensor([4.0, 9.0]), torch.tensor([4.0, 9.0]))
    torch.testing.assert_close(first, torch.tensor([math.tanh(0.1), math.tanh(0.01), 0.0], dtype=torch.float64))
    later = scheduler_features(steps * 50, inv_scales, torch.tensor([0.04, 0.09], dtype=torch.float64),
                               torch.tensor([4.0, 9.0], dtype=torch.float64))  # fmt: skip
    assert later[-1].item() == pytest.approx(math.log(0.1), rel=1e-12)  # the gradients' RMS fell tenfold
    rule = perturbed(TinyConfig(scheduler=True))
    params = [torch.randn(4, 3, dtype=torch.float64)]
    state = rule.join([rule.init_state(p) for p in params])
    for k, factor in enumerate((1.0, 0.5, 0.25)):
        _, state = rule.step(torch.full((12,), 2.0 * factor, dtype=torch.float64), state, params)
        assert state["first_square"].item() == 4.0, k  # kept from the first step


def test_a_checkpoint_of_the_rule_saves_and_loads_with_the_same_updates(tmp_path) -> None:  # noqa: ANN001
    rule = perturbed(TinyConfig(learned_tensors="hidden", scheduler=True, param_scale=True))
    save_checkpoint(tmp_path / "tiny.pt", rule, {"note": "test"})
    loaded = load_net(tmp_path / "tiny.pt")
    assert isinstance(loaded, TinyRule) and loaded.config == rule.config
    runs = []
    for r in (rule, loaded):
        model = mlp()
        runs.append(trajectory(model, LearnedOptimizer(model.parameters(), rule=r), 4)[-1])
    assert torch.equal(runs[0], runs[1])
    by_path = mlp()
    opt = LearnedOptimizer(by_path.parameters(), checkpoint=tmp_path / "tiny.pt")
    assert torch.equal(trajectory(by_path, opt, 4)[-1], runs[0])


def test_every_shipped_rule_loads_by_name_and_is_described_in_one_line() -> None:
    import metaopt

    names = metaopt.list_pretrained()
    lines = metaopt.list_pretrained(describe=True)
    assert "family-mlp-v0" in names and len(lines) == len(names)
    for name, line in zip(names, lines):
        assert line.startswith(f"{name}: ") and "\n" not in line and len(line) > len(name) + 20
        assert load_net(name) is not None


def test_per_tensor_means_of_a_large_model_are_each_tensors_own_mean() -> None:
    """Above the dense averager's limit the means come from per-tensor slice sums (the GPU-friendly path)."""
    from metaopt.rules.tiny import _Segments

    sizes = [400_000, 300_000, 5]
    segments = _Segments([0, 1, 2], sizes, [0, 400_000, 700_000], True, torch.float64, torch.device("cpu"))
    assert segments.averager is None  # 700,005 coordinates x 3 tensors: past the dense limit
    values = torch.randn(2, sum(sizes), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([piece.mean(1) for piece in values.split(sizes, dim=1)], dim=1)
    torch.testing.assert_close(segments.mean(values), expected, rtol=1e-12, atol=0)
