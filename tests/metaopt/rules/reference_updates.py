"""Record (``python tests/metaopt/rules/reference_updates.py``) or recompute the reference updates of the shipped rules.

The recorded file, ``data/rule-updates-v1.pt``, was written by the code before the drop-in step was optimized; the
tests in ``test_rule_reference_updates.py`` recompute the same quantities with the current code and compare them to
float32 rounding. Never regenerate the file with newer code: it is the evidence that an optimization kept the updates.

Quantities, for ``family-mlp-v0`` and a seeded ``lstm`` rule (float32, CPU), on a 3-layer MLP 12-16-8-3 (float32):

- ``params``: the parameters after each of 5 in-place ``LearnedOptimizer`` steps, ``(5, P)``;
- ``twin``: the same through ``higher.innerloop_ctx`` (the differentiable twin), ``(5, P)``;
- ``meta_grad``: the gradient of the final loss after a 4-step unroll with respect to the rule's weights, flattened.
"""

from __future__ import annotations

from pathlib import Path

import higher
import torch
from torch import nn

from metaopt import LearnedOptimizer, load_net
from metaopt.rules import LearnedRule, make_rule

FIXTURE = Path(__file__).with_name("data") / "rule-updates-v1.pt"


def _model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))


def _batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(5)
    return [(torch.randn(32, 12, generator=generator), torch.randint(0, 3, (32,), generator=generator))
            for _ in range(count)]  # fmt: skip


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def rule(name: str) -> LearnedRule:
    """The rule ``name`` of the fixture: ``family-mlp-v0`` or an ``lstm`` rule of seed 7 (float32, CPU)."""
    if name == "family-mlp-v0":
        return load_net("family-mlp-v0")
    torch.manual_seed(7)
    return make_rule("lstm", {})


def compute(name: str) -> dict[str, torch.Tensor]:
    """``params``, ``twin`` and ``meta_grad`` of the rule ``name`` with the current code (see the module docstring)."""
    learned = rule(name)
    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), rule=learned.requires_grad_(False))
    after = []
    for batch in _batches(5):
        optimizer.zero_grad()
        _loss(model, batch).backward()
        optimizer.step()
        after.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    twin = []
    model = _model()
    with higher.innerloop_ctx(model, LearnedOptimizer(model.parameters(), rule=learned), copy_initial_weights=True,
                              track_higher_grads=False) as (fmodel, diffopt):  # fmt: skip
        for batch in _batches(5):
            diffopt.step(_loss(fmodel, batch))
            twin.append(torch.cat([p.detach().reshape(-1) for p in fmodel.parameters()]))
    learned.requires_grad_(True)
    model = _model()
    batches = _batches(5)
    with higher.innerloop_ctx(model, LearnedOptimizer(model.parameters(), rule=learned),
                              copy_initial_weights=True) as (fmodel, diffopt):  # fmt: skip
        for batch in batches[:4]:
            diffopt.step(_loss(fmodel, batch))
        grads = torch.autograd.grad(_loss(fmodel, batches[4]), list(learned.parameters()))
    learned.requires_grad_(False)
    meta_grad = torch.cat([g.reshape(-1) for g in grads])
    return {"params": torch.stack(after), "twin": torch.stack(twin), "meta_grad": meta_grad}


if __name__ == "__main__":
    torch.set_num_threads(1)
    FIXTURE.parent.mkdir(exist_ok=True)
    torch.save({name: compute(name) for name in ("family-mlp-v0", "lstm")}, FIXTURE)
    print(f"wrote {FIXTURE}")
