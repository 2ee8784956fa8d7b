"""Dataset readers; nothing is ever downloaded.

Bundled data (scikit-learn digits, Python's own documentation text) or local files in their standard formats
(MNIST idx, CIFAR-10 python batches, PTB text).
"""

from envs.data.cifar10 import load_cifar10
from envs.data.digits import load_digits_split
from envs.data.locate import data_root
from envs.data.mnist import load_mnist, read_idx
from envs.data.text import load_ptb, python_docs_text

__all__ = ["data_root", "load_cifar10", "load_digits_split", "load_mnist", "load_ptb", "python_docs_text", "read_idx"]
