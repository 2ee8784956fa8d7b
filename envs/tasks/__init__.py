"""The reference tasks (quadratic, polynomial regressions, digits, MNIST, CIFAR-10, PTB, permutation, charlm); importing
this package registers them all."""

from envs.tasks import classification, language, permutation, polynomial, quadratic

__all__ = ["classification", "language", "permutation", "polynomial", "quadratic"]
