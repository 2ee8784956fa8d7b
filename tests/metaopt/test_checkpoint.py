"""Checkpoints: a round trip rebuilds the rule; old files load and step the same; bad files are one clear message."""

from __future__ import annotations

from pathlib import Path

import higher
import pytest
import torch

import envs
from metaopt import CheckpointError, CoordinateLSTM, LearnedOptimizer, LSTMConfig, load_net, save_checkpoint
from metaopt.checkpoint import load_checkpoint, load_weights


def test_round_trip_rebuilds_architecture_and_weights(tmp_path: Path) -> None:
    net = CoordinateLSTM(LSTMConfig(features="scaled", input_scale=3.0, hidden_size=7, num_layers=3, output_scale=0.5))
    save_checkpoint(tmp_path / "a.pt", net, {"note": "x"})
    loaded = load_net(tmp_path / "a.pt")
    assert loaded.config == net.config
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    assert load_checkpoint(tmp_path / "a.pt")["info"] == {"note": "x"}


def corrupt(path: Path, kind: str) -> None:
    save_checkpoint(path, CoordinateLSTM())
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)))
    elif kind == "text":  # the case: torch.load raised KeyError 101 on it
        path.write_text("epoch 3: loss 0.25\nepoch 4: loss 0.21\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "foreign":
        torch.save({"spec": {"name": "quadratic"}, "state_dict": {}}, path)
    elif kind == "version":
        payload = torch.load(path, weights_only=True)
        torch.save({**payload, "version": 99}, path)
    elif kind == "mismatch":
        payload = torch.load(path, weights_only=True)
        torch.save({**payload, "config": {**payload["config"], "hidden_size": 8}}, path)
    elif kind == "missing":
        path.unlink()


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("missing", "no checkpoint at .*; pass a checkpoint written by `metaopt train`"),
        ("truncated", "is truncated, corrupt or not a torch checkpoint .*copy it again"),
        ("garbage", r"is not a metaopt checkpoint \(not a file torch.save writes\)"),
        ("text", r"is not a metaopt checkpoint \(a text file\); pass a checkpoint written by `metaopt train`"),
        ("empty", r"is not a metaopt checkpoint \(an empty file\)"),
        ("foreign", r"is not a metaopt checkpoint \(it holds: spec, state_dict\)"),
        ("version", "format version 99, this code reads version 2"),
        ("mismatch", r"architecture .*hidden_size=8.*the weights do not match the rule \(weights of another shape: "),
    ],
)
def test_bad_checkpoints_get_one_clear_error(tmp_path: Path, kind: str, match: str) -> None:
    path = tmp_path / "net.pt"
    corrupt(path, kind)
    with pytest.raises(CheckpointError, match=match):
        LearnedOptimizer([torch.zeros(3, requires_grad=True)], checkpoint=path)


def test_weights_load_strictly_an_extra_and_a_missing_key_are_named(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    save_checkpoint(path, CoordinateLSTM())
    payload = torch.load(path, weights_only=True)
    weights = dict(payload["state_dict"])
    weights["readout.scale"] = weights.pop("readout.bias")  # one weight renamed: one missing, one unexpected
    torch.save({**payload, "state_dict": weights}, path)
    with pytest.raises(CheckpointError, match=r"missing weights: readout.bias; unexpected weights: readout.scale"):
        load_net(path)
    net = CoordinateLSTM()
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(CheckpointError, match="missing weights: readout.bias; unexpected weights: readout.scale"):
        load_weights(net, weights, path)  # what the trainer's resume uses on last.pt
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # nothing was loaded
    only_extra = {**payload["state_dict"], "readout.scale": torch.ones(1)}
    with pytest.raises(CheckpointError, match=r"\(unexpected weights: readout.scale\)"):
        load_weights(net, only_extra, path)


def test_optimizer_state_of_another_model_is_refused_naming_the_shapes() -> None:
    rule = CoordinateLSTM()
    small, big = torch.zeros(3, requires_grad=True), torch.zeros(5, requires_grad=True)
    opt = LearnedOptimizer([small], rule=rule)
    small.grad = torch.ones(3)
    opt.step()
    other = LearnedOptimizer([big], rule=rule)
    with pytest.raises(ValueError, match=r"parameter 0 \(shape \(5,\)\).*\(3, 2, 2, 20\).*\(5, 2, 2, 20\)"):
        other.load_state_dict(opt.state_dict())
    assert not other.state  # nothing was loaded: the next step starts from the rule's initial state
    big.grad = torch.ones(5)
    other.step()
    same = LearnedOptimizer([torch.zeros(3, requires_grad=True)], rule=rule)
    same.load_state_dict(opt.state_dict())  # the right shapes still load


DATA = Path(__file__).parent / "data"


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_a_checkpoint_written_before_rules_were_pluggable_gives_the_same_updates() -> None:
    path = DATA / "lstm-v1.pt"  # see data/README.md: written by the code before the restructuring
    payload = load_checkpoint(path)
    assert (payload["format"], payload["version"], payload["rule"]) == ("metaopt.coordinate_lstm", 1, "lstm")
    expected = torch.load(DATA / "lstm-v1-updates.pt", weights_only=True)
    problem = envs.make_task("quadratic", dim=4).instance(0)
    model = problem.init_model(0)
    opt = LearnedOptimizer(model.parameters(), checkpoint=path)
    assert isinstance(opt.rule, CoordinateLSTM) and opt.rule.config.hidden_size == 4
    batches = problem.batches(0)
    for row in expected["plain"]:
        opt.zero_grad()
        problem.loss(model, next(batches)).backward()
        opt.step()
        # the drop-in step's gates are all sigmoids now (tanh through the identity): float32 rounding, not bit for bit
        torch.testing.assert_close(flat(model), row, rtol=1e-5, atol=1e-6)
    assert (flat(model) - flat(problem.init_model(0))).abs().max() > 1e-3  # the steps moved the parameters
    model, batches = problem.init_model(0), problem.batches(0)
    with higher.innerloop_ctx(model, LearnedOptimizer(model.parameters(), checkpoint=path)) as (fmodel, diffopt):
        for row in expected["twin"]:
            diffopt.step(problem.loss(fmodel, next(batches)))
            assert torch.equal(torch.cat([p.detach().reshape(-1) for p in fmodel.fast_params]), row)


def test_new_checkpoints_record_the_rule_by_name(tmp_path: Path) -> None:
    net = load_net(DATA / "lstm-v1.pt")
    save_checkpoint(tmp_path / "b.pt", net)
    payload = load_checkpoint(tmp_path / "b.pt")
    assert (payload["format"], payload["version"], payload["rule"]) == ("metaopt.learned_rule", 2, "lstm")
    again = load_net(tmp_path / "b.pt")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    payload["rule"] = "nope"
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="unknown rule 'nope'; valid rules: .*lstm"):
        load_net(tmp_path / "c.pt")
