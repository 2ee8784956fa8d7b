"""The task contract: every registered task passes it, and tasks that break one rule are caught by name."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gymnasium as gym
import pytest
import torch
from torch import Tensor, nn

import envs
from envs.task import Batch, Recipe, Task, full_batches
from envs.task.contract import TaskContractError, check_task
from envs.task.registry import TASKS
from envs.tasks.classification import DigitsMLPTask


@pytest.mark.parametrize("name", envs.list_tasks())  # every task registered when the tests start, new ones included
def test_every_registered_task_keeps_the_contract(name: str, data_dirs: dict[str, str]) -> None:
    options = {"data_dir": data_dirs[name]} if name in data_dirs else {}
    check_task(envs.make_task(name, **options))


class _NoBatchDimension(DigitsMLPTask):
    def eval_data(self) -> Batch:
        inputs, targets = super().eval_data()
        return inputs[0], targets[0]  # one example without its batch dimension


class _LossDisagrees(DigitsMLPTask):
    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return 2 * super().loss(model, batch)


class _ShapeChanges(DigitsMLPTask):
    def batches(self, seed: int) -> Iterator[Batch]:
        for step, (inputs, targets) in enumerate(super().batches(seed)):
            yield (inputs, targets) if step % 2 == 0 else (inputs[:-1], targets[:-1])


class _SeedIgnored(DigitsMLPTask):
    calls = 0

    def batches(self, seed: int) -> Iterator[Batch]:
        self.calls += 1  # a stream that depends on how often it was asked for, not on the seed
        return super().batches(seed + self.calls)


class _SameWeightsEverySeed(DigitsMLPTask):
    def init_model(self, seed: int) -> nn.Module:
        return super().init_model(0)


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (_NoBatchDimension, "eval_data() must hold a batch dimension first"),
        (_LossDisagrees, "but criterion(model(inputs), targets) ="),
        (_ShapeChanges, "training batches change shape from step to step"),
        (_SeedIgnored, "batches(0) twice gave different batches"),
        (_SameWeightsEverySeed, "init_model(0) and init_model(1) gave the same weights"),
    ],
)
def test_a_task_that_breaks_one_rule_is_refused_by_name(cls: type[Task], message: str) -> None:
    task = cls(DigitsMLPTask.Options())
    with pytest.raises(
        TaskContractError, match=r"task 'digits_mlp': .*" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        check_task(task)


@dataclass
class _LineOptions:
    """Options of the line task."""

    slope: float = 2.0


class _Line(Task):
    name = "contract_line"
    Options = _LineOptions
    recipe = Recipe(optimizer="sgd", lr=0.1, steps=20)

    def build_model(self) -> nn.Module:
        return nn.Linear(1, 1)

    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs - targets).pow(2).mean()

    def batches(self, seed: int) -> Iterator[Batch]:
        return full_batches(self.eval_data())

    def eval_data(self) -> Batch:
        x = torch.linspace(-1, 1, 16, device=self.device, dtype=self.dtype).unsqueeze(1)
        return x, self.options.slope * x


def test_registering_a_task_checks_its_class_and_gives_it_its_gymnasium_ids() -> None:
    try:
        envs.register_task(_Line)
        assert envs.ENV_IDS["contract_line"] == "metaopt/ContractLine-v0"
        for ident in ("metaopt/ContractLine-v0", "metaopt/ContractLine-LR-v0"):
            assert ident in gym.registry  # registered by register_task itself, not on first use of ENV_IDS
        check_task(envs.make_task("contract_line"))
    finally:
        TASKS.unregister("contract_line")
        for ident in ("metaopt/ContractLine-v0", "metaopt/ContractLine-LR-v0"):
            gym.registry.pop(ident, None)


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("name", "Contract Line", "name must be a lowercase identifier"),
        ("Options", dict, "Options must be a dataclass"),
        ("recipe", {"lr": 0.1}, "recipe must be an envs.task.Recipe"),
        ("env_name", "contract-line", "env_name must be CamelCase"),
    ],
)
def test_register_task_refuses_a_class_that_breaks_the_contract(attribute: str, value: object, message: str) -> None:
    broken = type("_Broken", (_Line,), {attribute: value})
    with pytest.raises(TaskContractError, match=message):
        envs.register_task(broken)
    assert "contract_line" not in TASKS and "Contract Line" not in TASKS
