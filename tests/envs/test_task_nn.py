"""The building blocks of the reference tasks: the unrolled LSTM is ``torch.nn.LSTM``, ``mlp`` builds what it says."""

from __future__ import annotations

import torch
from torch import nn

from envs.task.nn import CharLSTM, LSTMLayer, mlp


def test_the_unrolled_lstm_layer_equals_torch_lstm_with_the_same_weights() -> None:
    torch.manual_seed(0)
    ours = LSTMLayer(5, 7)
    reference = nn.LSTM(5, 7, batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(ours.weight_ih)
        reference.weight_hh_l0.copy_(ours.weight_hh)
        reference.bias_ih_l0.copy_(ours.bias)
        reference.bias_hh_l0.zero_()
    x = torch.randn(3, 6, 5)
    expected, _ = reference(x)
    torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-6)


def test_mlp_puts_the_activation_between_layers_only_and_honours_bias_and_the_output_activation() -> None:
    net = mlp([4, 5, 6, 3], "tanh")
    assert [type(m) for m in net] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)] == [(4, 5), (5, 6), (6, 3)]
    assert all(m.bias is None for m in mlp([2, 3, 1], bias=False) if isinstance(m, nn.Linear))
    assert isinstance(mlp([2, 3, 1], "relu", output_activation="sigmoid")[-1], nn.Sigmoid)


def test_the_char_lstm_gives_logits_per_token() -> None:
    torch.manual_seed(0)
    model = CharLSTM(vocab_size=11, embed_size=4, hidden_size=6, num_layers=2)
    tokens = torch.randint(0, 11, (3, 8))
    assert model(tokens).shape == (3, 8, 11)
