"""``char_transformer``: a causal decoder whose attention, positions and initialisation are what they say."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

import envs
from envs.task.nn import CausalSelfAttention, CharTransformer, TransformerBlock


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


def test_the_model_is_embeddings_blocks_norm_readout_as_gpt2() -> None:
    """Token row plus position row of the one table, the blocks, the final norm, the readout; order matters."""
    torch.manual_seed(2)
    model = CharTransformer(vocab_size=11, width=8, heads=2, num_layers=2, context=6).double()
    for norm in (model.norm, *[m for b in model.blocks for m in (b.norm1, b.norm2)]):
        torch.nn.init.normal_(norm.weight)
    tokens = torch.tensor([[3, 3, 3, 7, 1]])
    table = model.embed.weight
    x = table[tokens[0]] + table[11:16]  # tokens' rows, then positions 0..4 after the vocabulary
    for block in model.blocks:
        x = block(x[None])[0]
    expected = model.head(torch.nn.functional.layer_norm(x, (8,), model.norm.weight, model.norm.bias))
    torch.testing.assert_close(model(tokens)[0], expected, rtol=1e-12, atol=1e-12)
    # a repeated token is told apart by its position: the first three logits differ
    logits = model(tokens)[0]
    assert (logits[1] - logits[0]).abs().max() > 1e-6 and (logits[2] - logits[1]).abs().max() > 1e-6
    with pytest.raises(ValueError, match="a sequence of 7 tokens is longer than the context of 6"):
        model(torch.zeros(1, 7, dtype=torch.long))


def test_initialisation_and_parameter_order() -> None:
    model = CharTransformer(vocab_size=50, width=64, heads=4, num_layers=8, context=32)
    names = [name for name, _ in model.named_parameters()]
    assert names[0] == "embed.weight" and names[-2:] == ["head.weight", "head.bias"]
    assert model.embed.weight.shape == (82, 64)  # 50 tokens, then 32 positions
    shapes = [tuple(p.shape) for p in model.parameters()]
    matrices = [i for i, shape in enumerate(shapes) if len(shape) == 2]
    assert matrices[0] == 0 and matrices[-1] == len(shapes) - 2  # the embeddings first, the readout last
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.05)
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
