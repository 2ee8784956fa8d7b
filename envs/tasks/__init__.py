"""The reference tasks of DESIGN.md section 5; importing this package registers them all."""

from envs.tasks import classification, language, permutation, polynomial, quadratic

__all__ = ["classification", "language", "permutation", "polynomial", "quadratic"]
