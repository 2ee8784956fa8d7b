"""Are two run directories the same run? Every number they hold is compared, bit for bit.

Checks, for the files both directories have: every ``*.pt`` (tensors with ``torch.equal``, nested dicts and lists entry
by entry), ``records.jsonl`` line by line, every ``*.csv`` as text, every ``*.png`` byte for byte, the TensorBoard
scalars and histograms (tag, step, value; not the wall times) and the keys both ``config.yaml`` files share (but
``out``). Left out: wall-clock fields (``seconds``, ``seconds_*``), the process's global RNG state saved for a resume
(``rng``: PyTorch seeds the global generator randomly in every process and the framework never draws from it, so two
runs of the same code differ there), hidden files (a run directory's lock), and on request the file formats' own headers
where a newer code writes a newer format (``--ignore-key format --ignore-key version --ignore-key rule``). Used to show
that a restructuring left the behaviour unchanged:

    python scripts/compare_runs.py /tmp/before-train /tmp/after-train --ignore-key format --ignore-key version \
        --ignore-key rule

Exit status 0 when identical, 1 otherwise (every difference is printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

WALL_CLOCK = ("seconds",)
"""Keys (and their ``_*`` variants) that hold wall-clock times."""
ALWAYS_IGNORED = {"rng"}
"""Keys that differ between two processes running the same code."""


def _is_wall_clock(key: str) -> bool:
    return any(key == k or key.startswith(k + "_") for k in WALL_CLOCK)


def diff(a: Any, b: Any, where: str, ignore: set[str]) -> list[str]:
    """Differences between two nested values (tensors bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return [f"{where}: tensor vs {type(b if isinstance(a, torch.Tensor) else a).__name__}"]
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            return [f"{where}: tensors differ ({a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)})"]
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if str(key) in ignore or _is_wall_clock(str(key)):
                continue
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'second' if key not in a else 'first'}")
                continue
            out += diff(a[key], b[key], f"{where}.{key}", ignore)
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: lengths {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{where}[{i}]", ignore)]
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:  # both NaN
        return []
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def tensorboard_values(folder: Path) -> dict[str, Any]:
    """``{run/tag: [(step, value), ...]}`` for every scalar and histogram under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, Any] = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        run = str(events.parent.relative_to(folder))
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values[f"{run}/{tag}"] = [(e.step, e.value) for e in acc.Scalars(tag)]
        for tag in acc.Tags()["histograms"]:
            values[f"{run}/{tag}"] = [(e.step, str(e.histogram_value)) for e in acc.Histograms(tag)]
    return values


def compare(first: Path, second: Path, ignore: set[str]) -> list[str]:
    """Every difference between the run directories ``first`` and ``second``."""
    out: list[str] = []
    ignore = ignore | ALWAYS_IGNORED
    files_a = {p.relative_to(first) for p in first.rglob("*") if p.is_file() and not p.name.startswith(".")}
    files_b = {p.relative_to(second) for p in second.rglob("*") if p.is_file() and not p.name.startswith(".")}
    for rel in sorted(files_a ^ files_b):
        if "tfevents" not in rel.name:
            out.append(f"{rel}: only in {'first' if rel in files_a else 'second'}")
    compared = 0
    for rel in sorted(files_a & files_b):
        a, b = first / rel, second / rel
        if rel.suffix == ".pt":
            out += diff(torch.load(a, weights_only=True), torch.load(b, weights_only=True), str(rel), ignore)
        elif rel.name == "records.jsonl":
            lines_a = [json.loads(line) for line in a.read_text().splitlines()]
            lines_b = [json.loads(line) for line in b.read_text().splitlines()]
            out += diff(lines_a, lines_b, str(rel), ignore)
        elif rel.suffix == ".csv":
            out += [] if a.read_text() == b.read_text() else [f"{rel}: text differs"]
        elif rel.suffix == ".png":
            out += [] if a.read_bytes() == b.read_bytes() else [f"{rel}: image bytes differ"]
        elif rel.name == "config.yaml":
            config_a, config_b = yaml.safe_load(a.read_text()), yaml.safe_load(b.read_text())
            shared = (set(config_a) & set(config_b)) - {"out"}
            out += diff({k: config_a[k] for k in shared}, {k: config_b[k] for k in shared}, str(rel), ignore)
        else:
            continue
        compared += 1
    tb_a, tb_b = tensorboard_values(first), tensorboard_values(second)
    out += diff(tb_a, tb_b, "tensorboard", ignore)
    print(f"{first} vs {second}: {compared} files and {len(tb_a)} TensorBoard series compared")
    return out


def main() -> int:
    """Compare the two run directories given on the command line; 0 when identical."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--ignore-key", action="append", default=[], help="a dict key left out everywhere")
    args = parser.parse_args()
    differences = compare(args.first, args.second, set(args.ignore_key))
    for line in differences:
        print("DIFF", line)
    print("identical" if not differences else f"{len(differences)} differences")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
