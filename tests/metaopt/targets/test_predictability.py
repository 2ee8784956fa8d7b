"""Predictability of targets: the recomputed gradients are the base run's, the base optimizer's own step is predicted
exactly from its own update direction, the fit recovers known coefficients, and the table script runs and refuses
an empty directory."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

import envs
from envs.tooling.config import load_config
from metaopt.commands.targets import TargetsConfig, run_targets
from metaopt.inner import batches_from
from metaopt.targets import base_trajectory, load_shard
from metaopt.targets.predict import (
    FEATURES,
    WindowSample,
    base_gradients,
    cosine,
    cross_fit,
    explained_fraction,
    fit_coefficients,
    gradient_features,
    predict,
    shard_samples,
)

SMALL = ["seeds=2", "steps=30", "window=10", "stride=10", "device=cpu", "dss.max_rounds=4", "dss.max_steps=300"]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "run"
    run_targets(load_config(TargetsConfig, "metaopt/targets/poly_cubic.yaml", [*SMALL, f"out={out}"]))
    return out


@pytest.fixture(scope="module")
def digits() -> envs.Task:
    return envs.make_task("digits_mlp", width=8).load()


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("predictability", Path("scripts/predictability.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _autograd(problem: envs.Task, seed: int, theta: torch.Tensor, step: int) -> torch.Tensor:
    model = problem.init_model(seed)
    torch.nn.utils.vector_to_parameters(theta, model.parameters())
    loss = problem.loss(model, next(batches_from(problem, seed, step)))
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])


def test_recomputed_gradients_are_those_of_the_iterates_on_the_base_runs_batches(digits: envs.Task) -> None:
    iterates, _ = base_trajectory(digits, 1, "adam", 0.05, 6)
    gradients = base_gradients(digits, 1, iterates)
    assert gradients.shape == (6, iterates.shape[1])
    for step in (0, 4):  # minibatches differ step to step: an off-by-one batch would not match
        assert torch.equal(gradients[step], _autograd(digits, 1, iterates[step], step))
    assert not torch.equal(gradients[4], _autograd(digits, 1, iterates[4], 3))


def test_the_shards_gradient_at_step_zero_is_autograd_at_theta_zero(dataset_dir: Path) -> None:
    shard = load_shard(dataset_dir / "targets" / "00-poly_cubic-seed1.pt")
    problem = envs.make_task("poly_cubic")
    gradient = base_gradients(problem, 1, shard["iterates"], 1)[0]
    torch.testing.assert_close(gradient, _autograd(problem, 1, shard["iterates"][0], 0), rtol=0, atol=0)
    samples = shard_samples(shard)
    assert samples and all(s.features.shape == (shard["iterates"].shape[1], len(FEATURES)) for s in samples)
    window = next(w for w in shard["windows"] if w["connected"])
    first = next(s for s in samples if s.t == window["t"])
    assert torch.equal(first.steps["geodesic"], (window["targets"][1] - window["targets"][0]).double())


@pytest.mark.parametrize(("optimizer", "lr", "feature"), [("momentum", 0.3, "heavy_ball"), ("adam", 0.05, "adam")])
def test_the_base_optimizers_step_is_predicted_by_its_own_direction(
    digits: envs.Task, optimizer: str, lr: float, feature: str
) -> None:
    samples = []
    for seed in (0, 1):
        iterates, _ = base_trajectory(digits, seed, optimizer, lr, 12)
        features = gradient_features(base_gradients(digits, seed, iterates))
        theta = iterates.double()
        for t in range(0, 12, 2):
            samples.append(WindowSample(seed, t, 1.0, features[t], {"teacher": theta[t + 1] - theta[t]}))
    results, coefficients = cross_fit(samples, "teacher")
    assert min(r.r2 for r in results) > 0.999 and min(r.cosine for r in results) > 0.9995
    assert float(coefficients[FEATURES.index(feature)]) == pytest.approx(-lr, rel=1e-3)
    column = FEATURES.index("grad")  # the plain gradient alone misses the optimizer's history
    alone = [WindowSample(s.seed, s.t, 1.0, s.features[:, column : column + 1], s.steps) for s in samples]
    assert sorted(r.r2 for r in cross_fit(alone, "teacher")[0])[len(alone) // 2] < 0.99


def test_features_follow_their_definitions() -> None:
    gradients = torch.tensor([[1.0, -2.0], [3.0, 0.5], [-1.0, 1.0]])
    features = gradient_features(gradients)
    column = {name: FEATURES.index(name) for name in FEATURES}
    torch.testing.assert_close(features[..., column["grad"]], gradients.double())
    torch.testing.assert_close(features[0, :, column["ema_0.9"]], gradients[0].double())  # bias-corrected at t = 0
    torch.testing.assert_close(
        features[2, :, column["ema_0.5"]], (0.25 * gradients[0] + 0.5 * gradients[1] + gradients[2]).double() / 1.75
    )
    torch.testing.assert_close(
        features[2, :, column["heavy_ball"]], (0.81 * gradients[0] + 0.9 * gradients[1] + gradients[2]).double()
    )
    torch.testing.assert_close(features[0, :, column["adam"]], gradients[0].sign().double(), rtol=0, atol=1e-7)
    torch.testing.assert_close(features[..., column["sign"]], gradients.sign().double())


def test_the_fit_recovers_a_known_linear_combination() -> None:
    generator = torch.Generator().manual_seed(0)
    truth = torch.tensor([0.5, -2.0, 0.0, 1.5], dtype=torch.float64)
    features = [torch.randn(30, 4, generator=generator, dtype=torch.float64) * scale for scale in (1.0, 1e-3, 10.0)]
    c = fit_coefficients(features, [f @ truth for f in features])
    torch.testing.assert_close(c, truth)
    assert explained_fraction(predict(features[1], c), features[1] @ truth) == pytest.approx(1.0)


def test_the_zero_predictor_explains_nothing_and_the_negation_is_worse() -> None:
    step = torch.tensor([1.0, -2.0, 3.0])
    assert explained_fraction(torch.zeros(3), step) == 0.0
    assert explained_fraction(-step, step) == pytest.approx(-3.0)
    assert cosine(-step, step) == pytest.approx(-1.0) and cosine(2 * step, step) == pytest.approx(1.0)


def test_cross_fitting_needs_two_seeds() -> None:
    sample = WindowSample(0, 0, 1.0, torch.ones(3, 1), {"teacher": torch.ones(3)})
    with pytest.raises(ValueError, match="two base seeds"):
        cross_fit([sample], "teacher")


def test_the_script_prints_a_row_per_phase_and_refuses_an_empty_dir(
    dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    out = tmp_path / "table.md"
    assert script.main([str(dataset_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| poly_cubic")]
    assert rows and all(line.count("|") == 13 for line in rows)
    assert out.read_text() == printed
    (tmp_path / "empty").mkdir()
    assert script.main([str(tmp_path / "empty")]) == 2
    assert "no target shards" in capsys.readouterr().err
    assert script.main([str(tmp_path / "missing")]) == 2


def test_cross_fitting_scores_each_seed_with_coefficients_fitted_on_the_other_seeds_only() -> None:
    from metaopt.targets.predict import STEP_KINDS, WindowSample, cross_fit

    g = torch.Generator().manual_seed(0)
    coefficients = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    samples = []
    for seed in range(4):  # even seeds follow c, odd seeds follow -c: a fit that sees a seed's own kind scores +1
        sign = 1.0 if seed % 2 == 0 else -1.0
        for t in range(3):
            features = torch.randn(50, 3, generator=g, dtype=torch.float64)
            step = sign * features @ coefficients
            samples.append(WindowSample(seed, t, 1.0, features, {kind: step for kind in STEP_KINDS}))
    results, mean = cross_fit(samples, "chord")
    assert len(results) == len(samples) and {(r.seed, r.t) for r in results} == {(s.seed, s.t) for s in samples}
    assert all(r.cosine < -0.99 for r in results)  # held out: fitted on the other kind only
    assert torch.allclose(mean, torch.zeros(3, dtype=torch.float64), atol=1e-9)  # the two folds' fits cancel
