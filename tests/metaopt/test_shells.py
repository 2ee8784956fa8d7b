"""The optimizer shells: one rule call per step, SGD when the LSTM's weights say so, the higher twin, state."""

from __future__ import annotations

import gymnasium as gym
import higher
import pytest
import torch
from torch import nn

import envs
from metaopt import CoordinateLSTM, LearnedOptimizer, LSTMConfig, lstm_step, save_checkpoint
from metaopt.rules.lstm import initial_state


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 3)).double()


def batches(seed: int = 0, n: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)) for _ in range(6)
    ]


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def random_net(seed: int = 1, **config: object) -> CoordinateLSTM:
    torch.manual_seed(seed)
    return CoordinateLSTM(LSTMConfig(**config)).double()  # type: ignore[arg-type]


def sgd_net(lr: float) -> CoordinateLSTM:
    """Gates saturated open (input, output) or shut (forget), tiny inputs: each layer passes its input on linearly,
    and the read-out turns the result into -lr * g."""
    scale = 1e-4
    net = CoordinateLSTM(
        LSTMConfig(features="scaled", input_scale=scale, hidden_size=3, num_layers=2, output_scale=1.0)
    )
    net.double()
    with torch.no_grad():
        for cell in net.cells:
            for tensor in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh):
                tensor.zero_()
            hidden = cell.hidden_size
            cell.bias_ih[:hidden] = 40.0  # input gate open
            cell.bias_ih[hidden : 2 * hidden] = -40.0  # forget gate shut
            cell.bias_ih[3 * hidden :] = 40.0  # output gate open
            cell.weight_ih[2 * hidden, 0] = 1.0  # the candidate of unit 0 is the input's first feature
        net.readout.weight.zero_()
        net.readout.bias.zero_()
        net.readout.weight[0, 0] = -lr / scale
    return net


def test_with_sgd_weights_it_is_sgd() -> None:
    lr = 0.3
    model, reference = small_model(), small_model()
    learned = LearnedOptimizer(model.parameters(), net=sgd_net(lr))
    sgd = torch.optim.SGD(reference.parameters(), lr=lr)
    for batch in batches():
        for m, opt in ((model, learned), (reference, sgd)):
            opt.zero_grad()
            loss_fn(m, batch).backward()
            opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10)
    assert not torch.allclose(next(model.parameters()), next(small_model().parameters()))  # it did move


def test_one_lstm_call_per_step_covers_every_coordinate() -> None:
    model = small_model()
    net = random_net()
    calls: list[int] = []
    blocked_step = net._blocked_step  # what the in-place drop-in step and the no-grad step both call

    def counted_step(features: torch.Tensor, state: tuple, out: object = None) -> tuple:
        calls.append(features.shape[0])
        return blocked_step(features, state, out)  # type: ignore[arg-type]

    net._blocked_step = counted_step  # type: ignore[method-assign]
    opt = LearnedOptimizer(model.parameters(), net=net)
    params = list(model.parameters())
    states = [initial_state(net, p.numel()) for p in params]
    for batch in batches():
        before = [p.detach().clone() for p in params]
        opt.zero_grad()
        loss_fn(model, batch).backward()
        grads = [p.grad.detach().clone() for p in params]
        calls.clear()
        opt.step()
        assert calls == [sum(p.numel() for p in params)]  # one call, every coordinate
        with torch.no_grad():  # the reference: one call per parameter tensor
            for i, (p, b, g) in enumerate(zip(params, before, grads)):
                update, states[i] = lstm_step(net, g.reshape(-1), states[i])
                assert torch.allclose(p, b + update.view_as(p), rtol=0, atol=1e-13)


def test_the_higher_twin_follows_the_same_trajectory() -> None:
    net = random_net()
    model = small_model()
    plain_model = small_model()
    opt = LearnedOptimizer(plain_model.parameters(), net=net)
    plain = []
    for batch in batches():
        opt.zero_grad()
        loss_fn(plain_model, batch).backward()
        opt.step()
        plain.append([p.detach().clone() for p in plain_model.parameters()])
    with higher.innerloop_ctx(model, LearnedOptimizer(model.parameters(), net=net)) as (fmodel, diffopt):
        for batch, expected in zip(batches(), plain):
            diffopt.step(loss_fn(fmodel, batch))
            for a, b in zip(fmodel.fast_params, expected):
                assert torch.allclose(a, b, rtol=0, atol=1e-12)
        # and the meta-gradient reaches the live network, not a copy
        loss_fn(fmodel, batches()[0]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_state_dict_round_trip_continues_identically() -> None:
    net = random_net()
    first, second = small_model(), small_model()
    opt = LearnedOptimizer(first.parameters(), net=net)
    data = batches()
    for batch in data[:3]:
        opt.zero_grad()
        loss_fn(first, batch).backward()
        opt.step()
    second.load_state_dict(first.state_dict())
    restored = LearnedOptimizer(second.parameters(), net=net)
    restored.load_state_dict(opt.state_dict())
    assert all("hidden" in restored.state[p] for p in second.parameters())
    for batch in data[3:]:
        for m, o in ((first, opt), (second, restored)):
            o.zero_grad()
            loss_fn(m, batch).backward()
            o.step()
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))


def test_registry_and_gymnasium_adapter(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "net.pt"  # type: ignore[operator]
    save_checkpoint(path, CoordinateLSTM())
    assert not envs.training.optim.get_optimizer_spec("learned").tunable_lr
    steps = 8
    env = gym.make(envs.ENV_IDS["quadratic"], max_episode_steps=steps)
    env_losses = envs.gym.rollout(env, envs.OptimizerPolicy("learned", checkpoint=path), seed=3, steps=steps)
    run_seed = env.reset(seed=3)[1]["run_seed"]
    task = envs.make_task("quadratic").instance(run_seed)
    model = task.init_model(run_seed)
    opt = envs.make_optimizer("learned", model.parameters(), checkpoint=path)
    assert isinstance(opt, LearnedOptimizer)
    stream, plain = task.batches(run_seed), []
    for _ in range(steps + 1):
        loss = task.loss(model, next(stream))
        plain.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert env_losses == plain


def test_it_needs_a_checkpoint_or_a_network() -> None:
    with pytest.raises(ValueError, match="needs exactly one of checkpoint"):
        envs.make_optimizer("learned", small_model().parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
def test_cuda_matches_cpu(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "net.pt"  # type: ignore[operator]
    save_checkpoint(path, random_net().float())
    results = []
    for device in ("cpu", "cuda"):
        model = small_model().float().to(device)
        opt = LearnedOptimizer(model.parameters(), checkpoint=path)
        for x, y in batches():
            opt.zero_grad()
            loss_fn(model, (x.float().to(device), y.to(device))).backward()
            opt.step()
        results.append(torch.cat([p.detach().cpu().reshape(-1) for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-5)
