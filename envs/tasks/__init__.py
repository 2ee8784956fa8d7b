"""The reference tasks; importing this package registers them all.

Quadratics, the polynomial regressions, digits (MLP and CNN), MNIST, CIFAR-10, PTB, the permutation pair, charlm,
teacher-student regression, the scikit-learn tables.
"""

from envs.tasks import classification, language, permutation, polynomial, quadratic, tabular, teacher_student

__all__ = ["classification", "language", "permutation", "polynomial", "quadratic", "tabular", "teacher_student"]
