"""The layout's rules: the engine never imports the commands, and geodesics is used through its public names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "metaopt"
ENTRY_POINTS = {"__init__.py", "__main__.py", "cli.py"}
GEODESICS_NAMES = {
    "BeadString",
    "CurveConfig",
    "DSSConfig",
    "LevelProfile",
    "Linear",
    "ParamSpace",
    "Projection",
    "ProjectionConfig",
    "connect",
    "connect_many",
    "list_finders",
    "polyline_at",
    "project_to_level",
    "segment_maxima",
    "takes_profiles",
}


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import statement of a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


ENGINE = sorted(
    p for p in PACKAGE.rglob("*.py") if "commands" not in p.relative_to(PACKAGE).parts and p.name not in ENTRY_POINTS
)


@pytest.mark.parametrize("path", ENGINE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_engine_modules_never_import_commands(path: Path) -> None:
    assert not [m for m, _ in imports(path) if m == "metaopt.commands" or m.startswith("metaopt.commands.")]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_geodesics_is_used_through_its_public_names(path: Path) -> None:
    for module, names in imports(path):
        if module == "geodesics":
            assert set(names) <= GEODESICS_NAMES, names
        elif module.startswith("geodesics."):
            assert path.name == "cli.py" and module == "geodesics.commands", module  # the command table
