"""``char_transformer``: a causal decoder whose attention, positions and initialisation are what they say."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

import envs
from envs.task.nn import CausalSelfAttention, CharTransformer, TransformerBlock, sinusoid_positions


def small(**options: object) -> envs.Task:
    return envs.make_task("char_transformer", **{"seq_len": 12, "batch_size": 4, "width": 16, "heads": 4, **options})


def test_attention_equals_torch_scaled_dot_product_attention_with_a_causal_mask() -> None:
    torch.manual_seed(0)
    attention = CausalSelfAttention(width=16, heads=4).double()
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    q, k, v = attention.qkv(x).view(3, 7, 3, 4, 4).permute(2, 0, 3, 1, 4).unbind(0)
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(3, 7, 16)
    torch.testing.assert_close(attention(x), attention.proj(reference), rtol=1e-12, atol=1e-12)


def test_a_block_is_pre_norm_attention_then_pre_norm_mlp() -> None:
    torch.manual_seed(1)
    block = TransformerBlock(width=8, heads=2, mlp_ratio=3).double()
    for norm in (block.norm1, block.norm2):  # gains and shifts of their own, so each norm is seen
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 5, 8, dtype=torch.float64)

    def norm(layer: torch.nn.LayerNorm, y: torch.Tensor) -> torch.Tensor:
        centred = y - y.mean(-1, keepdim=True)
        return centred / (centred.pow(2).mean(-1, keepdim=True) + layer.eps).sqrt() * layer.weight + layer.bias

    mid = x + block.attention(norm(block.norm1, x))
    first, second = block.mlp[0], block.mlp[2]
    expected = mid + second(F.gelu(first(norm(block.norm2, mid))))
    assert first.out_features == 24
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)


def test_a_position_sees_only_itself_and_the_past() -> None:
    task = small()
    model = task.init_model(0).double()
    tokens = next(task.batches(0))[0]
    logits = model(tokens)
    changed = tokens.clone()
    changed[:, 6] = (changed[:, 6] + 1) % task.vocab_size
    after = model(changed)
    torch.testing.assert_close(after[:, :6], logits[:, :6], rtol=0, atol=0)  # the past is untouched, bit for bit
    assert (after[:, 6:] - logits[:, 6:]).abs().amax(dim=-1).min() > 1e-6  # every later position sees the change


def test_positions_are_the_sinusoid_and_order_matters() -> None:
    code = sinusoid_positions(5, 6, torch.zeros((), dtype=torch.float64))
    for t in range(5):
        for i in range(3):
            angle = t / 10000 ** (2 * i / 6)
            assert code[t, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-12)
            assert code[t, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-12)
    assert sinusoid_positions(4, 5, torch.zeros(())).shape == (4, 5)  # an odd width keeps its first columns
    # without positions, attention over a repeated token could not tell the copies apart: here it does
    model = small().init_model(0).double()
    same = torch.full((1, 8), 3)
    logits = model(same)
    assert (logits[0, 1:] - logits[0, :1]).abs().amax() > 1e-6


def test_initialisation_and_parameter_order() -> None:
    model = CharTransformer(vocab_size=50, width=64, heads=4, num_layers=8)
    names = [name for name, _ in model.named_parameters()]
    assert names[0] == "embed.weight" and names[-2:] == ["head.weight", "head.bias"]
    params = dict(model.named_parameters())
    assert all(p.abs().max() == 0 for name, p in params.items() if name.endswith("bias"))
    assert all(torch.equal(p, torch.ones_like(p)) for name, p in params.items() if "norm" in name and "weight" in name)
    assert params["blocks.0.attention.qkv.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / math.sqrt(2 * 8)
    assert params["blocks.3.attention.proj.weight"].std().item() == pytest.approx(residual, rel=0.08)
    assert params["blocks.5.mlp.2.weight"].std().item() == pytest.approx(residual, rel=0.08)
    assert params["blocks.5.mlp.0.weight"].std().item() == pytest.approx(0.02, rel=0.05)


def test_vmap_over_stacked_weights_equals_each_model() -> None:
    """The comparison harness runs seeds as one vmapped model: every operation must batch over weights."""
    task = small(num_layers=2)
    models = [task.init_model(seed) for seed in range(3)]
    params, buffers = stack_module_state(models)
    tokens = next(task.batches(0))[0]

    def forward(p: dict, b: dict) -> torch.Tensor:
        return functional_call(models[0], (p, b), (tokens,))

    batched = vmap(forward)(params, buffers)
    for i, model in enumerate(models):
        torch.testing.assert_close(batched[i], model(tokens), rtol=1e-5, atol=1e-6)


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match=r"heads must divide width \(64\), got 5"):
        envs.make_task("char_transformer", heads=5)
    with pytest.raises(ValueError, match="num_layers must be positive"):
        envs.make_task("char_transformer", num_layers=0)


def test_same_text_as_charlm() -> None:
    transformer, lstm = envs.make_task("char_transformer"), envs.make_task("charlm")
    assert transformer.vocab_size == lstm.vocab_size
    assert torch.equal(transformer.eval_data()[0], lstm.eval_data()[0])
