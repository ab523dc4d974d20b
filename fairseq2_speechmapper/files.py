from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def write_text_atomically(path: Path, chunks: Iterable[str]) -> None:
    """Writes ``chunks`` as ``path`` through a temporary file renamed at the
    end, so that a killed run never leaves a half-written file that looks
    complete."""
    path.parent.mkdir(parents=True, exist_ok=True)

    tmp_file = path.with_name(path.name + ".tmp")

    with tmp_file.open("w", encoding="utf-8") as fp:
        for chunk in chunks:
            fp.write(chunk)

    tmp_file.replace(path)
