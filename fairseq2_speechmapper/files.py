"""The project's one atomic file writer."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def write_file_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Calls ``write`` on a temporary file, flushes it to disk and renames it
    to ``path``: after a kill (or a crash of the machine) the file is there
    whole or not at all. If writing fails (a full disk), the temporary file is
    removed and :class:`~fairseq2_speechmapper.errors.FileWriteError` says so
    in one line."""
    path.parent.mkdir(parents=True, exist_ok=True)

    tmp_file = path.with_name(path.name + ".tmp")

    try:
        write(tmp_file)

        with tmp_file.open("rb") as fp:
            os.fsync(fp.fileno())

        tmp_file.replace(path)
    except BaseException as ex:
        tmp_file.unlink(missing_ok=True)

        if not isinstance(ex, OSError):
            raise

        # Imported here: `prepare` writes through this module and never imports fairseq2.
        from fairseq2_speechmapper.errors import FileWriteError

        raise FileWriteError(
            f"{path}: cannot be written ({ex.strerror or ex}); no half-written file is left."
        ) from None


def write_text_atomically(path: Path, chunks: Iterable[str]) -> None:
    """Writes ``chunks`` as ``path`` atomically (see :func:`write_file_atomically`)."""

    def write(tmp_file: Path) -> None:
        with tmp_file.open("w", encoding="utf-8") as fp:
            for chunk in chunks:
                fp.write(chunk)

    write_file_atomically(path, write)


def write_json_atomically(path: Path, data: object) -> None:
    write_text_atomically(path, [json.dumps(data, indent=2, ensure_ascii=False), "\n"])
