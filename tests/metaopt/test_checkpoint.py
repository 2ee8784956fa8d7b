"""Checkpoints: a round trip rebuilds the network; every kind of bad file is one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metaopt import CheckpointError, CoordinateLSTM, LearnedOptimizer, LSTMConfig, load_net, save_checkpoint
from metaopt.checkpoint import load_checkpoint


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
        path.write_bytes(b"not a checkpoint at all")
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
        ("garbage", "is truncated, corrupt or not a torch checkpoint"),
        ("foreign", r"is not a learned-optimizer checkpoint \(it holds: spec, state_dict\)"),
        ("version", "format version 99, this code reads version 1"),
        ("mismatch", "weights do not match the architecture it records .*hidden_size=8.*mismatched entries"),
    ],
)
def test_bad_checkpoints_get_one_clear_error(tmp_path: Path, kind: str, match: str) -> None:
    path = tmp_path / "net.pt"
    corrupt(path, kind)
    with pytest.raises(CheckpointError, match=match):
        LearnedOptimizer([torch.zeros(3, requires_grad=True)], checkpoint=path)
