"""The mutation pass stays in step with the code: every mutant's text is found exactly once, in a file that exists,
and names tests that exist; a mutant left behind by a refactor would silently stop counting."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mutation_pass():  # noqa: ANN202  (a script, not a package module)
    spec = importlib.util.spec_from_file_location("mutation_pass", ROOT / "scripts" / "mutation_pass.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_mutant_applies_once_and_names_existing_tests() -> None:
    mutants = _mutation_pass().MUTANTS
    assert len(mutants) >= 100
    stale = [m.name for m in mutants if (ROOT / m.path).read_text().count(m.old) != 1]
    assert stale == [], f"mutants whose text is not found exactly once: {stale}"
    missing = [t for m in mutants for t in m.tests if not (ROOT / t.split("::")[0]).is_file()]
    assert missing == [], missing
    names = [m.name for m in mutants]
    assert len(names) == len(set(names)), "two mutants share a name"
