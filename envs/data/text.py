"""Text corpora: Penn Treebank from local files, and Python's own documentation as a corpus that always ships."""

from __future__ import annotations

from functools import lru_cache

from envs.data.locate import data_root, find_files

__all__ = ["load_ptb", "python_docs_text"]


@lru_cache(maxsize=1)
def python_docs_text() -> str:
    """The Python language reference topics bundled with every CPython (``pydoc_data.topics``).

    About 465k characters of English prose and code, joined in sorted topic order so the corpus is the same on
    every run.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


@lru_cache(maxsize=2)
def load_ptb(data_dir: str | None = None) -> dict[str, list[str]]:
    """Penn Treebank word-level splits ``{"train", "valid", "test"}`` as token lists, ``<eos>`` ending each line.

    Reads ``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt`` (Mikolov's ``simple-examples/data`` files) from
    ``data_dir`` or its ``ptb/`` or ``simple-examples/data/`` folders.
    """
    root = data_root(data_dir)
    names = {split: [f"ptb.{split}.txt"] for split in ("train", "valid", "test")}
    paths = find_files(
        root,
        ["", "ptb", "simple-examples/data"],
        names,
        "PTB",
        "They are the three files of Mikolov's simple-examples/data (ptb.train.txt, ptb.valid.txt, ptb.test.txt).",
    )
    splits = {}
    for split, path in paths.items():
        tokens: list[str] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            words = line.split()
            if words:
                tokens.extend(words)
                tokens.append("<eos>")
        if not tokens:
            raise ValueError(f"{path} holds no words; expected PTB text, one sentence per line")
        splits[split] = tokens
    return splits
