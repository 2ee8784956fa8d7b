"""The one training loop: its hooks (a model, an optimizer object, a batch stream, a callback) change nothing but
where a run starts and what it uses, so a run split in two equals the whole."""

from __future__ import annotations

import pytest
import torch

import envs
from envs.training.fit import fit


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_a_run_split_in_two_with_model_optimizer_and_batches_equals_the_whole() -> None:
    task = envs.make_task("digits_mlp", width=8)
    whole = fit(task, 3, optimizer="adam", lr=0.01, steps=10)
    model = task.init_model(3)
    opt = envs.make_optimizer("adam", model.parameters(), lr=0.01)
    batches = task.batches(3)
    first = fit(task, model=model, optimizer=opt, batches=batches, steps=4, evaluate=False)
    second = fit(task, model=model, optimizer=opt, batches=batches, steps=6)
    assert first.eval_metrics == {} and first.model is model
    assert first.losses + second.losses == whole.losses
    assert torch.equal(flat(second.model), flat(whole.model)) and second.eval_metrics == whole.eval_metrics
    assert len(whole.step_seconds) == whole.steps == 10 and all(s > 0 for s in whole.step_seconds)


def test_the_callback_sees_every_step_and_may_move_the_parameters() -> None:
    task = envs.make_task("quadratic", dim=4)
    seen: list[tuple[int, float]] = []

    def back_to_start(step: int, loss: float, model: torch.nn.Module) -> None:
        seen.append((step, loss))
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()

    result = fit(task, 0, optimizer="sgd", lr=0.1, steps=3, callback=back_to_start)
    assert [s for s, _ in seen] == [1, 2, 3] and [v for _, v in seen] == result.losses
    assert result.losses[1] == result.losses[2]  # every step started from the same (zero) parameters


def test_divergence_stops_the_loop_and_keeps_the_loss() -> None:
    result = fit(envs.make_task("quadratic", dim=4), 0, optimizer="sgd", lr=1e6, steps=50)
    assert (
        result.diverged
        and result.steps == len(result.losses) - 1
        and not torch.isfinite(torch.tensor(result.losses[-1]))
    )


def test_bad_hook_combinations_are_refused() -> None:
    task = envs.make_task("quadratic", dim=4)
    model = task.init_model(0)
    with pytest.raises(ValueError, match="lr= applies to a named optimizer"):
        fit(task, 0, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), lr=0.1)
    with pytest.raises(ValueError, match="fit needs a seed unless both model= and batches= are given"):
        fit(task, model=model)


def test_a_target_alone_evaluates_every_step_and_stops_at_the_first_below_it() -> None:
    task = envs.make_task("quadratic", dim=4)
    free = fit(task, 0, optimizer="adam", lr=0.1, steps=60, eval_every=1)
    target = free.eval_history[len(free.eval_history) // 2][1]  # a loss the run reaches half way
    stopped = fit(task, 0, optimizer="adam", lr=0.1, steps=60, stop_below=target)  # no eval_every given
    reached = next(step for step, loss in free.eval_history if loss <= target)
    assert stopped.steps == reached < 60 and stopped.eval_history[-1] == (reached, dict(free.eval_history)[reached])
