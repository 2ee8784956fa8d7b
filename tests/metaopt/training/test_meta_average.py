"""The rule's weights averaged over meta-steps (``meta_average``): its formula, what it is used for, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from envs.seeding import seeded
from envs.tooling.config import load_config
from metaopt import TrainConfig
from metaopt.cli import main
from metaopt.commands.train import resume_config, run_train
from metaopt.rules import make_rule
from metaopt.training import loop
from tests.metaopt.sizes import TINY_TRAIN

DECAY = 0.6


def config(tmp_path: Path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, "metaopt/quadratic.yaml", [*TINY_TRAIN, f"out={tmp_path / 'run'}", *overrides])


def saved(run: Path, name: str = "last.pt") -> dict[str, Any]:
    return torch.load(run / "checkpoints" / name, weights_only=True)


def test_the_average_follows_its_formula_and_is_what_is_validated_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raws: list[list[torch.Tensor]] = []
    validated: list[list[torch.Tensor]] = []
    update = loop.MetaTrainer.update_average

    def record_raw(self: loop.MetaTrainer) -> None:
        raws.append([w.detach().clone() for w in self.rule.parameters()])
        update(self)

    def record_validated(cfg: Any, tasks: Any, rule: torch.nn.Module, baseline: Any) -> dict[str, float]:
        validated.append([w.detach().clone() for w in rule.parameters()])
        return {"learned_final_loss": float(len(validated)), "adam_final_loss": 1.0}  # best.pt: the first one

    monkeypatch.setattr(loop.MetaTrainer, "update_average", record_raw)
    monkeypatch.setattr(loop, "validate", record_validated)
    run = tmp_path / "avg" / "run"
    run_train(config(tmp_path / "avg", "episodes=4", f"meta_average={DECAY}"))
    assert len(raws) == 4 * 2 and len(validated) == 2  # two meta-steps an episode, validation after 2 and 4

    expected = start_weights(config(tmp_path / "start"))  # by hand: the start, then a lerp per applied meta-step
    averages = []
    for step, raw in enumerate(raws, start=1):
        decay = min(DECAY, (1 + step) / (10 + step))
        expected = [decay * e + (1 - decay) * r for e, r in zip(expected, raw, strict=True)]
        averages.append(expected)
    last = saved(run)
    for mine, theirs in zip(last["trainer"]["average"], averages[-1], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)
    for mine, theirs in zip(validated[0], averages[3], strict=True):  # episode 2 ends after the 4th meta-step
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)
    best = saved(run, "best.pt")["state_dict"]
    assert all(torch.equal(b, v) for b, v in zip(best.values(), validated[0], strict=True))
    # the raw weights go on unchanged: the same run without the average ends with the same rule, bit for bit
    run_train(config(tmp_path / "plain", "episodes=4"))
    plain = saved(tmp_path / "plain" / "run")
    assert "average" not in plain["trainer"]
    raw = last["state_dict"].values()
    assert all(torch.equal(a, b) for a, b in zip(plain["state_dict"].values(), raw, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(best.values(), plain["state_dict"].values(), strict=True))


def start_weights(cfg: TrainConfig) -> list[torch.Tensor]:
    """The rule's weights at meta-step 0 (the trainer's initialisation, where the average starts)."""
    with seeded(cfg.seed, "net"):
        rule = make_rule(cfg.rule.name, cfg.rule_config())
    return [w.detach().clone() for w in rule.parameters()]


def test_a_resumed_run_keeps_its_average(tmp_path: Path) -> None:
    run_train(config(tmp_path / "a", "episodes=4", f"meta_average={DECAY}"))

    def kill_after_three(episode: int) -> None:
        if episode == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_train(config(tmp_path / "b", "episodes=4", f"meta_average={DECAY}"), callback=kill_after_three)
    run_train(resume_config(tmp_path / "b" / "run"))
    for name in ("last.pt", "best.pt"):
        a, b = saved(tmp_path / "a" / "run", name), saved(tmp_path / "b" / "run", name)
        assert all(torch.equal(x, y) for x, y in zip(a["state_dict"].values(), b["state_dict"].values(), strict=True))
    averages = [saved(tmp_path / run / "run")["trainer"]["average"] for run in ("a", "b")]
    assert all(torch.equal(x, y) for x, y in zip(*averages, strict=True))


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1"])
def test_a_decay_outside_zero_to_one_is_refused_naming_the_key(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "metaopt/quadratic.yaml", f"meta_average={value}", f"out={tmp_path / 'run'}"]) == 2
    assert "meta_average" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
