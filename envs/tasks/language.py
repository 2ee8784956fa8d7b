"""Language models: ``charlm`` and ``char_transformer`` on text that ships with Python, ``ptb_lstm`` on PTB files.

``charlm`` is a character-level LSTM trained on the Python language reference (``pydoc_data``, part of every CPython),
a stand-in for PTB that needs no download; ``char_transformer`` is a small decoder-only transformer on the same
characters. The last 10% of the corpus is held out; the evaluation set is a fixed set of non-overlapping windows from
it. Training batches are windows at random offsets of the training text.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from envs.data import load_ptb, python_docs_text
from envs.errors import TaskError
from envs.seeding import generator
from envs.task import Batch, Recipe, Task
from envs.task.nn import CharLSTM, CharTransformer
from envs.task.registry import register_task

__all__ = ["CharLMOptions", "CharLMTask", "CharTransformerOptions", "CharTransformerTask", "PTBOptions", "PTBTask"]


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"{key} must be positive, got {value}")


class LanguageModelTask(Task):
    """Shared machinery: token streams, random-offset windows, fixed evaluation windows, token cross-entropy."""

    @abstractmethod
    def token_streams(self) -> tuple[Tensor, Tensor, int]:
        """``(train_ids, eval_ids, vocab_size)``: 1-D int64 token streams on CPU."""

    def _streams(self) -> tuple[Tensor, Tensor, int]:
        if not hasattr(self, "_cached_streams"):
            train, held_out, vocab = self.token_streams()
            valid_size = getattr(self.options, "valid_size", 0)
            low = self.options.seq_len + 2
            if valid_size and not low <= valid_size <= len(train) - low:
                raise TaskError(
                    f"task {self.name}: valid_size={valid_size} tokens; valid range 0 or {low} <= valid_size <= "
                    f"{len(train) - low} (the held-out part and the rest must each hold a window of seq_len + 1)"
                )
            keep = len(train) - valid_size
            self._valid = train[keep:] if valid_size else None
            self._cached_streams = train[:keep], held_out, vocab
        return self._cached_streams

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens."""
        return self._streams()[2]

    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))

    def batches(self, seed: int) -> Iterator[Batch]:
        return self._windows(self._streams()[0], seed, "batches")

    @override
    def valid_batches(self, seed: int) -> Iterator[Batch]:
        self._streams()
        if self._valid is None:
            return super().valid_batches(seed)
        return self._windows(self._valid, seed, "valid")

    def _windows(self, tokens: Tensor, seed: int, stream: str) -> Iterator[Batch]:
        """Endless batches of ``batch_size`` random windows of ``tokens`` (offsets from the stream (seed, stream))."""
        length, size = self.options.seq_len, self.options.batch_size
        if len(tokens) <= length + 1:
            raise ValueError(f"training text has {len(tokens)} tokens, fewer than seq_len + 1 = {length + 1}")
        g = generator(seed, stream)
        offsets = torch.arange(length + 1)
        while True:
            starts = torch.randint(0, len(tokens) - length, (size,), generator=g)
            windows = tokens[starts.unsqueeze(1) + offsets]
            yield windows[:, :-1].to(self.device), windows[:, 1:].to(self.device)

    def eval_data(self) -> Batch:
        _, held_out, _ = self._streams()
        length = self.options.seq_len
        count = min(self.options.eval_size, (len(held_out) - 1) // length)
        if count < 1:
            raise ValueError(f"held-out text has {len(held_out)} tokens, too few for one window of {length + 1}")
        windows = held_out[: count * length + 1]
        inputs = windows[:-1].reshape(count, length)
        targets = windows[1:].reshape(count, length)
        return inputs.to(self.device), targets.to(self.device)

    def eval_metrics(self, model: nn.Module) -> dict[str, float]:
        metrics = super().eval_metrics(model)
        metrics["perplexity"] = float(torch.tensor(metrics["loss"]).exp())
        return metrics

    def build_model(self) -> nn.Module:
        o = self.options
        return CharLSTM(self.vocab_size, o.embed_size, o.hidden_size, o.num_layers)


@dataclass
class CharLMOptions:
    """Options of ``charlm``."""

    seq_len: int = 32
    """Characters per training window (truncated backpropagation length)."""
    batch_size: int = 32
    """Windows per batch."""
    embed_size: int = 16
    """Character embedding width."""
    hidden_size: int = 64
    """LSTM units per layer."""
    num_layers: int = 1
    """Stacked LSTM layers."""
    eval_size: int = 256
    """Held-out windows in the evaluation set."""
    valid_size: int = 0
    """Training characters held out (the last ones) for a meta-objective on held-out batches (0: none)."""

    def __post_init__(self) -> None:
        _check_positive(seq_len=self.seq_len, batch_size=self.batch_size, embed_size=self.embed_size,
                        hidden_size=self.hidden_size, num_layers=self.num_layers, eval_size=self.eval_size)  # fmt: skip


class PythonDocsTask(LanguageModelTask):
    """A model of the Python language reference's characters: the first 90% to train on, the rest held out."""

    @override
    def token_streams(self) -> tuple[Tensor, Tensor, int]:
        text = python_docs_text()
        alphabet = sorted(set(text))
        index = {ch: i for i, ch in enumerate(alphabet)}
        ids = torch.tensor([index[ch] for ch in text], dtype=torch.int64)
        split = int(0.9 * len(ids))
        return ids[:split], ids[split:], len(alphabet)


@register_task
class CharLMTask(PythonDocsTask):
    """``charlm``: character LSTM (16-d embedding, 64 units) on Python's bundled language reference text."""

    name = "charlm"
    env_name = "CharLM"
    Options = CharLMOptions
    recipe = Recipe(optimizer="adam", lr=0.01, steps=600)


@dataclass
class CharTransformerOptions:
    """Options of ``char_transformer``."""

    seq_len: int = 32
    """Characters per training window (the attention's context, and the positions with an embedding)."""
    batch_size: int = 32
    """Windows per batch."""
    width: int = 64
    """Model width (embedding, residual stream)."""
    heads: int = 4
    """Attention heads per block (a divisor of ``width``)."""
    num_layers: int = 2
    """Transformer blocks."""
    mlp_ratio: int = 4
    """Hidden units of each block's MLP per unit of width."""
    eval_size: int = 256
    """Held-out windows in the evaluation set."""
    valid_size: int = 0
    """Training characters held out (the last ones) for a meta-objective on held-out batches (0: none)."""

    def __post_init__(self) -> None:
        _check_positive(seq_len=self.seq_len, batch_size=self.batch_size, width=self.width, heads=self.heads,
                        num_layers=self.num_layers, mlp_ratio=self.mlp_ratio, eval_size=self.eval_size)  # fmt: skip
        if self.width % self.heads:
            raise ValueError(f"heads must divide width ({self.width}), got {self.heads}")


@register_task
class CharTransformerTask(PythonDocsTask):
    """``char_transformer``: 2-block GPT-2-style transformer (width 64, 4 heads) on ``charlm``'s characters."""

    name = "char_transformer"
    env_name = "CharTransformer"
    Options = CharTransformerOptions
    recipe = Recipe(optimizer="adam", lr=0.003, steps=500)

    @override
    def build_model(self) -> nn.Module:
        o = self.options
        return CharTransformer(self.vocab_size, o.width, o.heads, o.num_layers, o.seq_len, o.mlp_ratio)


@dataclass
class PTBOptions:
    """Options of ``ptb_lstm``."""

    seq_len: int = 20
    """Words per training window."""
    batch_size: int = 20
    """Windows per batch."""
    embed_size: int = 64
    """Word embedding width."""
    hidden_size: int = 128
    """LSTM units per layer."""
    num_layers: int = 1
    """Stacked LSTM layers."""
    eval_size: int = 256
    """Windows of the test split in the evaluation set."""
    data_dir: str | None = None
    """Folder with ptb.train.txt / ptb.valid.txt / ptb.test.txt; default ``$METAOPT_DATA`` or ``./data``."""

    def __post_init__(self) -> None:
        _check_positive(seq_len=self.seq_len, batch_size=self.batch_size, embed_size=self.embed_size,
                        hidden_size=self.hidden_size, num_layers=self.num_layers, eval_size=self.eval_size)  # fmt: skip


@register_task
class PTBTask(LanguageModelTask):
    """``ptb_lstm``: word-level LSTM language model on Penn Treebank from local files; vocabulary of the train split."""

    name = "ptb_lstm"
    Options = PTBOptions
    recipe = Recipe(optimizer="adam", lr=0.003, steps=2000)

    @override
    def token_streams(self) -> tuple[Tensor, Tensor, int]:
        splits = load_ptb(self.options.data_dir)
        vocab = {word: i for i, word in enumerate(sorted(set(splits["train"])))}
        unknown = vocab.get("<unk>")
        missing = [w for w in set(splits["test"]) if w not in vocab]
        if missing and unknown is None:
            raise ValueError(
                f"PTB test split has {len(missing)} words absent from the train split (e.g. {missing[0]!r}) and the "
                "train split has no <unk> token to map them to; use the standard PTB files"
            )

        def encode(words: list[str]) -> Tensor:
            return torch.tensor([vocab.get(w, unknown) for w in words], dtype=torch.int64)

        return encode(splits["train"]), encode(splits["test"]), len(vocab)
