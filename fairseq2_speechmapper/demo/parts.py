"""Builds a part of the demo assets at most once: each part is written into
``NAME.tmp`` and renamed to ``NAME`` with a stamp file only when complete, so a
killed build never leaves a half-written part that looks done; a part whose
stamp is missing or of another version is rebuilt."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

# Bumped whenever what a part writes changes, so stale parts are rebuilt.
_VERSION: Final = 1

_STAMP_FILE: Final = "DONE.json"


@final
@dataclass(kw_only=True)
class PartReport:
    name: str
    seconds: float
    """How long building the part took (when it was built, maybe earlier)."""

    size_bytes: int
    details: str
    built_now: bool


def build_part(part_dir: Path, build: Callable[[Path], tuple[str, dict[str, object]]]) -> PartReport:
    """Returns the report of ``part_dir``, first building it with ``build`` (which
    writes into the directory it is given and returns the details and card to
    stamp) unless a finished part of this version is there."""
    stamp = read_stamp(part_dir)
    if stamp:
        return PartReport(
            name=part_dir.name,
            seconds=float(stamp["seconds"]),  # type: ignore[arg-type]
            size_bytes=int(stamp["size_bytes"]),  # type: ignore[call-overload]
            details=str(stamp["details"]),
            built_now=False,
        )

    tmp_dir = part_dir.with_name(part_dir.name + ".tmp")

    # Leftovers of a killed run, or a part of another version.
    shutil.rmtree(tmp_dir, ignore_errors=True)

    tmp_dir.mkdir(parents=True)

    start_time = time.perf_counter()

    try:
        details, card = build(tmp_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)

        raise

    seconds = time.perf_counter() - start_time

    size_bytes = _dir_size(tmp_dir)

    stamp = {"version": _VERSION, "seconds": seconds, "size_bytes": size_bytes, "details": details, "card": card}

    (tmp_dir / _STAMP_FILE).write_text(json.dumps(stamp, indent=2), encoding="utf-8")

    shutil.rmtree(part_dir, ignore_errors=True)

    tmp_dir.rename(part_dir)

    return PartReport(name=part_dir.name, seconds=seconds, size_bytes=size_bytes, details=details, built_now=True)


def read_stamp(part_dir: Path) -> dict[str, object]:
    """Returns the stamp of a finished part of this version, else ``{}``."""
    try:
        stamp = json.loads((part_dir / _STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}

    if not isinstance(stamp, dict) or stamp.get("version") != _VERSION:
        return {}

    return stamp


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
