"""Common Voice ASR manifests from a release's language directory
(``cv-corpus-<version>/<locale>/``): ``<split>.tsv`` files with the columns
``client_id``, ``path``, ``sentence``, ... and the MP3 clips in ``clips/``."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from .manifest import PrepareError, PrepareOptions, PrepareResult, Utterance, existing_dir, write_split

COMMON_VOICE_SPLITS: Final = ("train", "dev", "test")

COMMON_VOICE_CLIPS_DIR: Final = "clips"


def prepare_common_voice(
    root: Path,
    out_dir: Path,
    options: PrepareOptions,
    *,
    splits: Sequence[str] = COMMON_VOICE_SPLITS,
    lang: str | None = None,
) -> PrepareResult:
    """Writes ``out_dir/<split>.jsonl`` for each of ``splits`` (any
    ``root/<split>.tsv``: ``train``, ``dev``, ``test``, ``validated``, ...).

    :param lang: the language code of the manifests' ``lang`` field; by
        default the name of ``root`` (the release's locale directory).
    """
    root = existing_dir(root, "Common Voice language directory")

    lang = lang or root.name

    prepared = []

    for split in splits:
        tsv_file = root / f"{split}.tsv"

        utterances = [
            common_voice_utterance(root, row, f"{tsv_file}:{line_nr}", lang=lang)
            for line_nr, row in read_tsv(tsv_file, ("client_id", "path", "sentence"))
        ]

        prepared.append(write_split(split, utterances, out_dir, options))

    return PrepareResult(splits=prepared)


def common_voice_utterance(root: Path, row: dict[str, str], source: str, *, lang: str) -> Utterance:
    """Returns the utterance of a Common Voice TSV row (``path``, ``sentence``,
    ``client_id``)."""
    clip = row["path"]

    if not clip:
        raise PrepareError(f"{source}: the `path` column is empty.")

    return Utterance(
        id=Path(clip).stem,
        audio_path=root / COMMON_VOICE_CLIPS_DIR / clip,
        text=row["sentence"],
        source=source,
        fields={"lang": lang, "speaker": row["client_id"]},
    )


def read_tsv(tsv_file: Path, required_columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yields the line number and the columns by name of each row of a Common
    Voice or CoVoST TSV file.

    As CoVoST's own scripts read them: tab-separated, no quoting (sentences
    hold bare quotes), backslash escapes.

    :raises PrepareError: if the file or a required column is missing, or a
        row has not as many columns as the header.
    """
    if not tsv_file.is_file():
        raise PrepareError(f"{tsv_file}: the TSV file does not exist.")

    with tsv_file.open(encoding="utf-8", newline="") as fp:
        reader = csv.reader(fp, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")

        header = next(reader, None)

        if header is None:
            raise PrepareError(f"{tsv_file}: the TSV file is empty; expected a header line.")

        missing_columns = [c for c in required_columns if c not in header]
        if missing_columns:
            raise PrepareError(
                f"{tsv_file}:1: the header lacks the column(s) {', '.join(missing_columns)}; it has {', '.join(header)}."
            )

        for row in reader:
            if not row:
                continue

            if len(row) != len(header):
                raise PrepareError(
                    f"{tsv_file}:{reader.line_num}: malformed row with {len(row)} columns; the header has {len(header)}."
                )

            yield reader.line_num, dict(zip(header, row))
