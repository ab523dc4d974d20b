"""EuroParl-ST (v1.1) speech translation manifests: segments of the long
recordings of European Parliament speeches.

The official layout::

    ROOT/<src>/audios/<talk>.m4a
    ROOT/<src>/<tgt>/<split>/segments.lst      <talk> <start> <end>  (seconds)
    ROOT/<src>/<tgt>/<split>/segments.<src>    the transcripts, line by line
    ROOT/<src>/<tgt>/<split>/segments.<tgt>    the translations, line by line

libsndfile decodes no AAC, so the recordings are converted first (same stem,
e.g. ``ffmpeg -i X.m4a -ac 1 -ar 16000 X.flac``) and named by ``audio_ext``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from .manifest import (
    PrepareError,
    PrepareOptions,
    PrepareResult,
    Utterance,
    existing_dir,
    libsndfile_reads,
    write_split,
)

EUROPARL_ST_SPLITS: Final = ("train", "dev", "test")

EUROPARL_ST_AUDIO_EXT: Final = "m4a"
"""The extension of the official recordings."""


def prepare_europarl_st(
    root: Path,
    out_dir: Path,
    options: PrepareOptions,
    *,
    src: str,
    tgt: str,
    splits: Sequence[str] = EUROPARL_ST_SPLITS,
    audio_ext: str = EUROPARL_ST_AUDIO_EXT,
) -> PrepareResult:
    """Writes ``out_dir/<split>.jsonl`` with one line per segment: ``offset``
    and ``duration`` into the talk's recording, the transcript as ``text``,
    the ``translation``, ``lang`` and ``tgt_lang`` fields.

    :param root: the directory with the source languages (``v1.1/`` of the
        official archive, or its parent).
    :param audio_ext: the extension of the recordings in ``audios/``; audio
        libsndfile cannot read (``m4a``) is only checked to exist, and the
        result's notes say to convert it.
    """
    root = existing_dir(root, "EuroParl-ST root")

    if not (root / src).is_dir() and (root / "v1.1" / src).is_dir():
        root = root / "v1.1"

    audio_dir = existing_dir(root / src / "audios", f"directory of the {src} recordings")

    pair_dir = existing_dir(root / src / tgt, f"directory of the {src}-{tgt} pair")

    audio_ext = audio_ext.lstrip(".")

    read_headers = libsndfile_reads(audio_ext)

    prepared = []

    for split in splits:
        utterances = read_europarl_st_split(pair_dir / split, audio_dir, src=src, tgt=tgt, audio_ext=audio_ext)

        prepared.append(write_split(split, utterances, out_dir, options, read_headers=read_headers))

    notes = []

    if not read_headers:
        notes.append(
            f"libsndfile cannot decode .{audio_ext} audio, so training cannot read {audio_dir}/*.{audio_ext} and "
            f"the durations come from segments.lst unchecked: convert the recordings (same stem, e.g. "
            f"`ffmpeg -i TALK.{audio_ext} -ac 1 -ar 16000 TALK.flac`) and run again with --audio-ext flac."
        )

    return PrepareResult(splits=prepared, notes=notes)


def read_europarl_st_split(split_dir: Path, audio_dir: Path, *, src: str, tgt: str, audio_ext: str) -> list[Utterance]:
    """Reads the segments of a split with their transcripts and translations."""
    split_dir = existing_dir(split_dir, "EuroParl-ST split directory")

    segments_file = split_dir / "segments.lst"

    transcripts_file = split_dir / f"segments.{src}"
    translations_file = split_dir / f"segments.{tgt}"

    segment_lines = _read_lines(segments_file)

    transcripts = _read_lines(transcripts_file)
    translations = _read_lines(translations_file)

    if not len(segment_lines) == len(transcripts) == len(translations):
        raise PrepareError(
            f"{split_dir}: segments.lst, segments.{src} and segments.{tgt} must be line-aligned, but have "
            f"{len(segment_lines)}, {len(transcripts)} and {len(translations)} lines."
        )

    utterances = []

    for line_nr, (segment_line, transcript, translation) in enumerate(
        zip(segment_lines, transcripts, translations), start=1
    ):
        source = f"{segments_file}:{line_nr}"

        talk, start, end = _parse_segment(segment_line, source)

        utterances.append(
            Utterance(
                id=f"{talk}_{start}_{end}",
                audio_path=audio_dir / f"{talk}.{audio_ext}",
                text=transcript.strip(),
                source=source,
                segment=(float(start), float(end)),
                fields={"lang": src, "translation": translation.strip(), "tgt_lang": tgt},
            )
        )

    return utterances


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise PrepareError(f"{path}: the file does not exist.")

    # Not `splitlines()`: it also splits at U+2028 and the like inside a sentence.
    text = path.read_text(encoding="utf-8")

    return text.removesuffix("\n").split("\n") if text else []


def _parse_segment(line: str, source: str) -> tuple[str, str, str]:
    """Returns the talk, start and end of a ``segments.lst`` line, the times
    as written (they make the utterance id)."""
    columns = line.split()

    if len(columns) == 3:
        talk, start, end = columns

        try:
            if 0.0 <= float(start) < float(end):
                return talk, start, end
        except ValueError:
            pass

    raise PrepareError(f"{source}: malformed segment line {line!r}; expected `TALK START END` in seconds, START < END.")
