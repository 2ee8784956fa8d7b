"""Image classification tasks: the bundled digits (MLP and CNN), and MNIST / CIFAR-10 from local files.

``digits_mlp`` is the L2L paper's MNIST setting (one hidden layer of 20 sigmoid units, batch 128) on data that
ships with scikit-learn; ``mnist_mlp`` is the same network on MNIST itself. The CNNs are small, BatchNorm-free
convnets in the spirit of the DSS paper's MNIST and CIFAR-10 experiments (their exact architectures are not in the
paper).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from envs.data import load_cifar10, load_digits_split, load_mnist
from envs.errors import TaskError
from envs.task import Batch, Recipe, Task, minibatches
from envs.task.nn import ACTIVATIONS, mlp
from envs.task.registry import register_task

__all__ = [
    "Cifar10CNNTask",
    "DigitsCNNTask",
    "DigitsMLPTask",
    "MnistCNNTask",
    "MnistMLPTask",
]


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"{key} must be positive, got {value}")


def _check_valid_size(valid_size: int) -> None:
    if valid_size < 0:
        raise ValueError(f"valid_size must be >= 0 (0: no held-out split), got {valid_size}")


@dataclass
class DigitsMLPOptions:
    """Options of ``digits_mlp``."""

    width: int = 20
    """Hidden units per layer."""
    depth: int = 1
    """Number of hidden layers."""
    activation: str = "sigmoid"
    """Hidden non-linearity: sigmoid, relu, tanh or gelu."""
    batch_size: int = 128
    """Training minibatch size."""
    test_size: int = 500
    """Images held out as the fixed evaluation set (the rest, 1,297 by default, train)."""
    valid_size: int = 0
    """Training images held out for a meta-objective on held-out batches (the last ones; 0: none)."""

    def __post_init__(self) -> None:
        _check_activation(self.activation)
        _check_positive(width=self.width, depth=self.depth, batch_size=self.batch_size)
        _check_valid_size(self.valid_size)


@dataclass
class DigitsCNNOptions:
    """Options of ``digits_cnn``."""

    channels: int = 8
    """Channels of the first convolution (the second has twice as many)."""
    convs: int = 1
    """Convolutions per stage (the first of a stage changes the channels, the others keep them): depth 2 * convs."""
    activation: str = "relu"
    """Non-linearity after each convolution: sigmoid, relu, tanh or gelu."""
    batch_size: int = 128
    """Training minibatch size."""
    test_size: int = 500
    """Images held out as the fixed evaluation set."""
    valid_size: int = 0
    """Training images held out for a meta-objective on held-out batches (the last ones; 0: none)."""

    def __post_init__(self) -> None:
        _check_activation(self.activation)
        _check_positive(channels=self.channels, convs=self.convs, batch_size=self.batch_size)
        _check_valid_size(self.valid_size)


@dataclass
class MnistMLPOptions:
    """Options of ``mnist_mlp``."""

    width: int = 20
    """Hidden units per layer."""
    depth: int = 1
    """Number of hidden layers."""
    activation: str = "sigmoid"
    """Hidden non-linearity: sigmoid, relu, tanh or gelu."""
    batch_size: int = 128
    """Training minibatch size."""
    data_dir: str | None = None
    """Folder with the MNIST idx files; default ``$METAOPT_DATA`` or ``./data``."""
    eval_size: int = 10_000
    """First test images used as the evaluation set (restrict it to speed up DSS)."""

    def __post_init__(self) -> None:
        _check_activation(self.activation)
        _check_positive(width=self.width, depth=self.depth, batch_size=self.batch_size, eval_size=self.eval_size)


@dataclass
class ImageCNNOptions:
    """Options of ``mnist_cnn`` and ``cifar10_cnn``."""

    batch_size: int = 128
    """Training minibatch size."""
    data_dir: str | None = None
    """Folder with the dataset files; default ``$METAOPT_DATA`` or ``./data``."""
    eval_size: int = 10_000
    """First test images used as the evaluation set (restrict it to speed up DSS)."""

    def __post_init__(self) -> None:
        _check_positive(batch_size=self.batch_size, eval_size=self.eval_size)


class ClassificationTask(Task):
    """Cross-entropy classification on a fixed train/test split; reports accuracy and error besides the loss."""

    image_shape: ClassVar[tuple[int, ...]]
    """Shape of one input as the model receives it."""

    @abstractmethod
    def load_split(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x_train, y_train, x_test, y_test)`` on CPU; ``x`` floating, ``y`` int64."""

    def _data(self) -> tuple[Batch, Batch, Batch | None]:
        """``(train, evaluation, held-out or None)``; the held-out split is the last ``valid_size`` training images."""
        if not hasattr(self, "_split"):
            x_train, y_train, x_test, y_test = self.load_split()
            eval_size = getattr(self.options, "eval_size", len(y_test))
            x_test, y_test = x_test[:eval_size], y_test[:eval_size]
            valid_size = getattr(self.options, "valid_size", 0)
            if valid_size >= len(y_train):
                raise TaskError(
                    f"task {self.name}: valid_size={valid_size} leaves no training images (there are "
                    f"{len(y_train)}); valid range 0 <= valid_size < {len(y_train)}"
                )

            def place(x: Tensor, y: Tensor) -> Batch:
                x = x.reshape(len(x), *self.image_shape)
                return x.to(self.device, self.dtype), y.to(self.device)

            keep = len(y_train) - valid_size
            held_out = place(x_train[keep:], y_train[keep:]) if valid_size else None
            self._split = (place(x_train[:keep], y_train[:keep]), place(x_test, y_test), held_out)
        return self._split

    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets)

    def batches(self, seed: int) -> Iterator[Batch]:
        return minibatches(self._data()[0], self.options.batch_size, seed)

    @override
    def valid_batches(self, seed: int) -> Iterator[Batch]:
        held_out = self._data()[2]
        if held_out is None:
            return super().valid_batches(seed)
        return minibatches(held_out, min(self.options.batch_size, len(held_out[1])), seed, stream="valid")

    def eval_data(self) -> Batch:
        return self._data()[1]

    def batch_metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, float]:
        accuracy = float((outputs.argmax(dim=-1) == targets).to(torch.float64).mean())
        return {"accuracy": accuracy, "error": 1.0 - accuracy}


def _hidden_mlp(n_in: int, options: DigitsMLPOptions | MnistMLPOptions) -> nn.Module:
    return mlp([n_in] + [options.width] * options.depth + [10], options.activation)


@register_task
class DigitsMLPTask(ClassificationTask):
    """``digits_mlp``: 64-20-10 sigmoid MLP on scikit-learn's 8x8 digits, batch 128 (the L2L MNIST setting)."""

    name = "digits_mlp"
    Options = DigitsMLPOptions
    recipe = Recipe(optimizer="adam", lr=0.01, steps=1000)
    image_shape = (64,)

    @override
    def load_split(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return load_digits_split(self.options.test_size)

    @override
    def build_model(self) -> nn.Module:
        return _hidden_mlp(64, self.options)


class SmallConvNet(nn.Module):
    """Two stages of ``convs`` conv(3x3) layers + pool(2), and a linear read-out; no BatchNorm.

    Args:
        in_channels: input channels.
        channels: channels of the first stage; the second has ``2 * channels``.
        side: input height and width (divisible by 4).
        activation: non-linearity name.
        convs: convolutions per stage.
    """

    def __init__(self, in_channels: int, channels: int, side: int, activation: str, convs: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        for n_in, n_out in ((in_channels, channels), (channels, 2 * channels)):
            for k in range(convs):
                layers += [nn.Conv2d(n_in if k == 0 else n_out, n_out, 3, padding=1), ACTIVATIONS[activation]()]
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * channels * (side // 4) ** 2, 10)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, C, side, side) -> logits (B, 10)``."""
        return self.head(self.features(x).flatten(start_dim=-3))


@register_task
class DigitsCNNTask(ClassificationTask):
    """``digits_cnn``: conv(8)-pool-conv(16)-pool-linear on the 8x8 digits, ReLU, batch 128."""

    name = "digits_cnn"
    Options = DigitsCNNOptions
    recipe = Recipe(optimizer="adam", lr=0.01, steps=500)
    image_shape = (1, 8, 8)

    @override
    def load_split(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return load_digits_split(self.options.test_size)

    @override
    def build_model(self) -> nn.Module:
        return SmallConvNet(1, self.options.channels, 8, self.options.activation, self.options.convs)


@register_task
class MnistMLPTask(ClassificationTask):
    """``mnist_mlp``: 784-20-10 sigmoid MLP on MNIST read from local idx files, batch 128."""

    name = "mnist_mlp"
    Options = MnistMLPOptions
    recipe = Recipe(optimizer="adam", lr=0.01, steps=2000)
    image_shape = (784,)

    @override
    def load_split(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return load_mnist(self.options.data_dir)

    @override
    def build_model(self) -> nn.Module:
        return _hidden_mlp(784, self.options)


class LeNet(nn.Module):
    """conv(5x5)-pool-conv(5x5)-pool-linear-linear for 28x28 inputs, ReLU, no BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential(nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, 1, 28, 28) -> logits (B, 10)``."""
        return self.head(self.features(x).flatten(start_dim=-3))


@register_task
class MnistCNNTask(ClassificationTask):
    """``mnist_cnn``: a LeNet-style convnet (16 and 32 channels, 64 hidden units) on MNIST from local files."""

    name = "mnist_cnn"
    Options = ImageCNNOptions
    recipe = Recipe(optimizer="adam", lr=0.001, steps=2000)
    image_shape = (1, 28, 28)

    @override
    def load_split(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return load_mnist(self.options.data_dir)

    @override
    def build_model(self) -> nn.Module:
        return LeNet()


class CifarQuickNet(nn.Module):
    """Three conv(5x5, 32/32/64 channels)+pool stages and two linear layers; ReLU, no BatchNorm.

    After the "quick" CIFAR-10 model of Krizhevsky's cuda-convnet.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, 3, 32, 32) -> logits (B, 10)``."""
        return self.head(self.features(x).flatten(start_dim=-3))


@register_task
class Cifar10CNNTask(ClassificationTask):
    """``cifar10_cnn``: the cuda-convnet "quick" CIFAR-10 convnet on local CIFAR-10 python batches."""

    name = "cifar10_cnn"
    Options = ImageCNNOptions
    recipe = Recipe(optimizer="adam", lr=0.001, steps=4000)
    image_shape = (3, 32, 32)

    @override
    def load_split(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return load_cifar10(self.options.data_dir)

    @override
    def build_model(self) -> nn.Module:
        return CifarQuickNet()
