"""Names resolved on first use, so that importing a package (or listing commands) does not import torch.

Two forms, one rule: a ``"module:attribute"`` reference (:func:`resolve`), used for registered optimizers and the
command tables of the command lines; and a package's public names loaded on first access (:func:`lazy_exports`,
PEP 562), used by the ``__init__`` of ``envs``, ``geodesics`` and ``metaopt``. ``python -m metaopt --help`` then
costs the argument parser, not the 1-2 s of importing torch and every model.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["lazy_exports", "resolve"]


def resolve(reference: Any) -> Any:
    """The object a ``"module:attribute"`` string names (``"torch.optim:SGD"``); anything else is returned as is."""
    if not isinstance(reference, str):
        return reference
    module, sep, attribute = reference.partition(":")
    if not sep or not module or not attribute:
        raise ValueError(f"a lazy reference is 'module:attribute', got {reference!r}")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose public names live in its submodules.

    Args:
        package: the package's ``__name__``.
        exports: submodule -> the names it provides (the package's ``__all__``, by where each name is defined).

    A name is imported from its submodule on first access and then cached in the package; any other attribute that
    is a submodule (``envs.training``, ``metaopt.shells``) is imported, as an eager ``__init__`` would have done. A name
    that is also its submodule's name (``envs.fit``, the function of ``envs/fit.py``) stays the name when the
    submodule is imported, which would otherwise bind the module over it.
    """
    where = {name: module for module, names in exports.items() for name in names}
    here = sys.modules[package].__path__  # a name that is also a submodule of the package (a module moved elsewhere
    shadowed = {name for name in where if any((Path(d) / f"{name}.py").is_file() for d in here)}  # keeps its old name)
    if shadowed:

        class Package(types.ModuleType):
            """The package's module type: binding a submodule under a shadowed name binds the name instead."""

            def __setattr__(self, name: str, value: Any) -> None:
                if name in shadowed and isinstance(value, types.ModuleType):
                    value = getattr(value, name)  # the import system binds a submodule once it has run
                super().__setattr__(name, value)

        sys.modules[package].__class__ = Package

    def __getattr__(name: str) -> Any:
        module = sys.modules[package]
        if name in where:
            value = getattr(importlib.import_module(where[name]), name)
        elif not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
