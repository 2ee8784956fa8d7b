"""The reference tasks; importing this package registers them all (every module of this folder is imported).

Quadratics, the polynomial regressions, digits (MLP and CNN), MNIST, CIFAR-10, PTB, the permutation pair, charlm,
teacher-student regression, the scikit-learn tables. A new reference task is one module here: no list to edit.
"""

import importlib
import pkgutil

__all__ = sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))

for _module in __all__:
    importlib.import_module(f"{__name__}.{_module}")
