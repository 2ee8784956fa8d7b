"""Are two run directories the same run? Every number they hold is compared, bit for bit.

Checks, for the files both directories have: every ``*.pt`` (tensors with ``torch.equal``, nested dicts and lists entry
by entry), ``records.jsonl`` as a set of records (a resumed run appends in another order), every ``*.csv`` row by row
(wall-clock columns left out), every ``report.md`` with its wall-clock figures masked, every ``*.png`` byte for byte,
the TensorBoard scalars and histograms (tag, step, value; not the wall times; a value logged again after a resume
counts once) and the keys both ``config.yaml`` files share (but ``out`` and ``name``). Left out: wall-clock fields
(``seconds``, ``seconds_*``, ``*_seconds``), the process's global RNG state saved for a resume (``rng``: PyTorch seeds
the global generator randomly in every process and the framework never draws from it, so two runs of the same code
differ there), hidden files (a run directory's lock), and on request the file formats' own headers where a newer code
writes a newer format (``--ignore-key format --ignore-key version --ignore-key rule``). Used to show
that a restructuring left the behaviour unchanged:

    python -m envs.tooling.rundiff /tmp/before-train /tmp/after-train --ignore-key format --ignore-key version \
        --ignore-key rule

The tests use :func:`diff_runs` to show that a run killed with ``kill -9`` and resumed equals an uninterrupted one.

Exit status 0 when identical, 1 otherwise (every difference is printed).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

WALL_CLOCK = ("seconds", "wall_clock")
"""Keys (and their ``_*`` variants) that hold wall-clock times or figures computed from them."""
ALWAYS_IGNORED = {"rng"}
"""Keys that differ between two processes running the same code."""


def _is_wall_clock(key: str) -> bool:
    return any(key == k or key.startswith(k + "_") or key.endswith("_" + k) for k in WALL_CLOCK)


def _csv_rows(text: str) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if not _is_wall_clock(k)} for row in csv.DictReader(io.StringIO(text))]


__all__ = ["diff", "diff_runs", "main", "tensorboard_values"]

_SECONDS = re.compile(r"\b\d+(\.\d+)?( ?(s|ms|min)\b)")
_RATE = re.compile(r"\b\d[\d.,e+]*( [a-z-]+)? per (minute|second|hour)\b")
_TIMED_HEADER = re.compile(r"second|time|wall|/step|run-step|per (minute|second)")
_NEUTRAL_ROWS = ("run_dir", "out")


def _masked_report(text: str) -> str:
    """``report.md`` with wall-clock figures masked.

    Masked: ``12.3 s`` and rates (``393.2 pairs per minute``) anywhere, the cells of table columns whose header names a
    time (``seconds``, ``ms/step``, ...), and the values of key/value rows for a wall-clock key or the run's location.
    """
    lines: list[str] = []
    timed: set[int] = set()
    header = True
    for line in text.splitlines():
        if not line.startswith("|"):
            timed, header = set(), True
            lines.append(_RATE.sub("<rate>", _SECONDS.sub("<t>", line)))
            continue
        cells = line.split("|")
        if set(line) <= set("|-: "):  # the separator under a header
            lines.append(line)
            continue
        if header:
            timed = {i for i, c in enumerate(cells) if _TIMED_HEADER.search(c.lower())}
            header = False
            lines.append(line)
            continue
        first = cells[1].strip().strip("`") if len(cells) > 1 else ""
        if _is_wall_clock(first) or first in _NEUTRAL_ROWS:
            cells = cells[:2] + ["<masked>"] * (len(cells) - 2)
        cells = ["<t>" if i in timed else c for i, c in enumerate(cells)]
        lines.append(_RATE.sub("<rate>", _SECONDS.sub("<t>", "|".join(cells))))
    return "\n".join(lines)


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
            values.setdefault(f"{run}/{tag}", set()).update((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["histograms"]:
            series = values.setdefault(f"{run}/{tag}", set())
            series.update((e.step, str(e.histogram_value)) for e in acc.Histograms(tag))
    return {tag: sorted(series) for tag, series in values.items() if not _is_wall_clock(tag.rsplit("/", 1)[-1])}


def _records(path: Path, ignore: set[str]) -> list[Any]:
    """The records of a ``records.jsonl`` in a canonical order (wall-clock and ignored keys dropped)."""
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a torn last line of a killed run
            continue
        records.append({k: v for k, v in record.items() if k not in ignore and not _is_wall_clock(k)})
    return sorted(records, key=lambda r: json.dumps(r, sort_keys=True))


def diff_runs(first: str | Path, second: str | Path, ignore: set[str] | None = None, quiet: bool = True) -> list[str]:
    """Every difference between the run directories ``first`` and ``second`` (empty: the same run)."""
    first, second = Path(first), Path(second)
    out: list[str] = []
    ignore = (ignore or set()) | ALWAYS_IGNORED
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
            out += diff(_records(a, ignore), _records(b, ignore), str(rel), ignore)
        elif rel.suffix == ".csv":
            out += diff(_csv_rows(a.read_text()), _csv_rows(b.read_text()), str(rel), ignore)
        elif rel.name == "report.md":
            same = _masked_report(a.read_text()) == _masked_report(b.read_text())
            out += [] if same else [f"{rel}: text differs (wall-clock figures masked)"]
        elif rel.suffix == ".png":
            out += [] if a.read_bytes() == b.read_bytes() else [f"{rel}: image bytes differ"]
        elif rel.name == "config.yaml":
            config_a, config_b = yaml.safe_load(a.read_text()), yaml.safe_load(b.read_text())
            shared = (set(config_a) & set(config_b)) - {"out", "name"}
            out += diff({k: config_a[k] for k in shared}, {k: config_b[k] for k in shared}, str(rel), ignore)
        else:
            continue
        compared += 1
    tb_a, tb_b = tensorboard_values(first), tensorboard_values(second)
    out += diff(tb_a, tb_b, "tensorboard", ignore)
    if not quiet:
        print(f"{first} vs {second}: {compared} files and {len(tb_a)} TensorBoard series compared")
    return out


def main() -> int:
    """Compare the two run directories given on the command line; 0 when identical."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--ignore-key", action="append", default=[], help="a dict key left out everywhere")
    args = parser.parse_args()
    differences = diff_runs(args.first, args.second, set(args.ignore_key), quiet=False)
    for line in differences:
        print("DIFF", line)
    print("identical" if not differences else f"{len(differences)} differences")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
