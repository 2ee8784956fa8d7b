"""Weight matching: B keeps its function, A aligned to itself is A, a permuted copy of A comes back as A bit for bit,
and after alignment the Appendix E pair and independently trained ``permutation`` models connect at length about 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import envs
from envs.errors import ConfigError
from envs.tooling.config import load_config
from geodesics import BeadString, DSSConfig, ParamSpace, connect
from geodesics.alignment import align, chain_layers, permute_hidden, weight_matching
from geodesics.cli import main
from geodesics.commands.compare_paths import ComparePathsConfig
from geodesics.commands.disconnection import permuted_pair
from geodesics.endpoints import EndpointConfig, train_endpoints

TASKS = [
    ("permutation", {}),
    ("poly_quadratic", {}),
    ("poly_cubic", {}),
    ("digits_mlp", {}),
    ("digits_mlp", {"depth": 3, "activation": "relu", "width": 12}),
    ("digits_cnn", {}),
]
IDS = [name + "".join(f"-{key}={value}" for key, value in options.items()) for name, options in TASKS]
CONVNETS = ["mnist_cnn", "cifar10_cnn"]  # checked on random inputs: their data are local files


def space_of(name: str, options: dict[str, object]) -> ParamSpace:
    return ParamSpace(envs.make_task(name, **options))


def flat(space: ParamSpace, params: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([params[name].reshape(-1) for name in space.names])


def random_permutation_of(space: ParamSpace, theta: torch.Tensor, seed: int) -> torch.Tensor:
    layers = chain_layers(space.model)
    params = space.unflatten(theta)
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(params[layer.weight].shape[0], generator=g) for layer in layers[:-1]]
    return flat(space, permute_hidden(params, layers, perms))


@pytest.mark.parametrize(("name", "options"), TASKS, ids=IDS)
def test_alignment_keeps_the_function_of_b_on_the_evaluation_set(name: str, options: dict[str, object]) -> None:
    space = space_of(name, options)
    a, b = (space.flatten(space.task.init_model(seed)) for seed in (0, 1))
    aligned = align(space, a, b)
    assert not torch.equal(aligned, b)  # the units did move
    assert torch.equal(aligned.sort().values, b.sort().values)  # only moved: the same entries
    inputs, _ = space.task.eval_data()
    with torch.no_grad():
        before, after = space.to_model(b)(inputs), space.to_model(aligned)(inputs)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    losses = space.batched_eval_loss(torch.stack([b, aligned]))
    assert float((losses[0] - losses[1]).abs()) <= 1e-6 * max(1.0, float(losses[0]))


@pytest.mark.parametrize("name", CONVNETS)
def test_alignment_keeps_the_function_of_the_paper_sized_convnets(name: str) -> None:
    space = space_of(name, {})
    a, b = (space.flatten(space.task.init_model(seed)) for seed in (0, 1))
    inputs = torch.randn(4, *space.task.image_shape, generator=torch.Generator().manual_seed(0))
    aligned = align(space, a, b)
    with torch.no_grad():
        torch.testing.assert_close(space.to_model(aligned)(inputs), space.to_model(b)(inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "options"), TASKS, ids=IDS)
def test_alignment_is_the_identity_on_a_and_undoes_a_permutation_exactly(name: str, options: dict[str, object]) -> None:
    space = space_of(name, options)
    a = space.flatten(space.task.init_model(0))
    assert torch.equal(align(space, a, a), a)
    for seed in range(3):
        copy = random_permutation_of(space, a, seed)
        assert not torch.equal(copy, a)
        assert torch.equal(align(space, a, copy), a)


def test_none_returns_b_and_unknown_methods_and_models_are_refused() -> None:
    space = space_of("poly_cubic", {})
    a, b = (space.flatten(space.task.init_model(seed)) for seed in (0, 1))
    assert torch.equal(align(space, a, b, "none"), b)
    with pytest.raises(ValueError, match="align must be one of none, weight_matching, got 'rebasin'"):
        align(space, a, b, "rebasin")
    lstm = space_of("charlm", {})
    theta = lstm.flatten(lstm.task.init_model(0))
    with pytest.raises(ValueError, match="module 'embed' is a Embedding. Use align=none"):
        align(lstm, theta, theta)
    with pytest.raises(ConfigError, match="align must be one of none, weight_matching, got 'rebasin'"):
        load_config(ComparePathsConfig, None, ["align=rebasin"])


def test_matching_is_found_layer_by_layer_for_every_hidden_layer() -> None:
    space = space_of("digits_mlp", {"depth": 3, "width": 12})
    a = space.flatten(space.task.init_model(0))
    layers = chain_layers(space.model)
    params = space.unflatten(a)
    g = torch.Generator().manual_seed(5)
    perms = [torch.randperm(12, generator=g) for _ in layers[:-1]]
    found = weight_matching(space, a, flat(space, permute_hidden(params, layers, perms)))
    for perm, inverse in zip(perms, found):
        assert torch.equal(perm[inverse], torch.arange(12))  # unit i of the copy is unit perm[i] of A


def test_the_appendix_e_pair_connects_after_alignment() -> None:
    space = ParamSpace(envs.make_task("permutation"))
    a, b = permuted_pair(space, EndpointConfig(seed=1), 0.01, [0, 1])
    aligned = align(space, a, b)
    assert torch.equal(aligned, a)  # the swapped copy is mapped back onto the model itself
    string = connect(space, a, aligned, 0.01)
    assert string.connected and string.num_beads == 2 and string.normalized_length == 1.0


def test_independent_permutation_models_connect_after_alignment_at_length_about_one() -> None:
    space = ParamSpace(envs.make_task("permutation"))
    trained = train_endpoints(space, [1, 2], 0.01)
    assert bool(trained.reached.all())
    a, b = trained.thetas
    config = DSSConfig(max_rounds=4, max_steps=300)
    plain = connect(space, a, b, 0.01, config)
    matched = connect(space, a, align(space, a, b), 0.01, config)
    assert not plain.connected and plain.reason  # two components of the level set: a permutation apart
    assert matched.connected and matched.normalized_length < 1.1


def test_disconnection_with_alignment_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["disconnection", "geodesics/disconnection.yaml", f"out={out}", "align=weight_matching",
            "dss.max_rounds=2", "dss.max_steps=200", "control.threshold=0.2"]  # fmt: skip
    assert main(argv) == 0
    assert "permuted pair: connected after weight_matching" in capsys.readouterr().out
    permuted = BeadString.load(out / "strings" / "permuted.pt")
    assert permuted.connected and torch.equal(permuted.beads[0], permuted.beads[-1])
    assert "aligned to the model by `weight_matching`" in (out / "report.md").read_text()


def test_a_sweep_aligns_each_pair_before_connecting_it(tmp_path: Path) -> None:
    argv = ["sweep", "geodesics/sweep/poly_cubic.yaml", "device=cpu", "task.name=permutation", "thresholds=[0.01]",
            "pairs=1", "concurrent=1", "seed=1", "dss.max_rounds=4", "dss.max_steps=300"]  # fmt: skip
    strings = {}
    for method in ("none", "weight_matching"):
        assert main([*argv, f"align={method}", f"out={tmp_path / method}"]) == 0
        strings[method] = BeadString.load(next((tmp_path / method / "strings").glob("*.pt")))
    plain, matched = strings["none"], strings["weight_matching"]
    assert not plain.connected and matched.connected and matched.normalized_length < 1.1
    assert torch.equal(plain.beads[0], matched.beads[0])  # the same A; B's entries only moved
    assert torch.equal(plain.beads[-1].sort().values, matched.beads[-1].sort().values)
    space = ParamSpace(envs.make_task("permutation"))
    losses = space.batched_eval_loss(torch.stack([plain.beads[-1], matched.beads[-1]]))
    assert float((losses[0] - losses[1]).abs()) < 1e-6
