"""Where local datasets are looked for, and the error that tells the user where to put them."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from envs.errors import DataNotFoundError

__all__ = ["data_root", "find_files"]

ENV_VAR = "METAOPT_DATA"


def data_root(data_dir: str | None) -> Path:
    """The folder holding datasets: ``data_dir`` if given, else ``$METAOPT_DATA``, else ``./data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    return Path(os.environ.get(ENV_VAR, "data")).expanduser()


def find_files(
    root: Path, subdirs: Sequence[str], names: Mapping[str, Sequence[str]], dataset: str, how_to_get: str
) -> dict[str, Path]:
    """Locate each required file under ``root`` or one of its ``subdirs``.

    Args:
        root: the data root.
        subdirs: folders below ``root`` to search as well, in order (``""`` is ``root`` itself).
        names: for each logical file, the accepted file names (e.g. with and without ``.gz``).
        dataset: dataset name for the error message.
        how_to_get: one sentence on where the files come from, for the error message.

    Raises:
        DataNotFoundError: naming every missing file, the folders searched, and how to point the task elsewhere.
    """
    folders = [root / sub if sub else root for sub in subdirs]
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, candidates in names.items():
        hit = next((folder / c for folder in folders for c in candidates if (folder / c).is_file()), None)
        if hit is None:
            missing.append(candidates[0])
        else:
            found[key] = hit
    if missing:
        searched = ", ".join(str(f) for f in folders)
        raise DataNotFoundError(
            f"{dataset} files not found: {', '.join(missing)} (searched {searched}). "
            f"Put them in {folders[0]}, or point the task at their folder: the task option data_dir "
            "(envs.make_task(..., data_dir=PATH) in Python, task.options.data_dir=PATH on the command line, "
            f"data_dir=PATH in gymnasium.make), or set ${ENV_VAR}. {how_to_get} "
            "Nothing is downloaded at run time."
        )
    return found
