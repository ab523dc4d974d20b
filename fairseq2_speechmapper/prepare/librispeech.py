"""LibriSpeech manifests from the official layout
``ROOT/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` with the
``<speaker>-<chapter>-<utterance>.flac`` files beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from .manifest import (
    PreparedSplit,
    PrepareError,
    PrepareOptions,
    PrepareResult,
    Utterance,
    concatenate_splits,
    existing_dir,
    write_split,
)

LIBRISPEECH_TRAIN_SUBSETS: Final = ("train-clean-100", "train-clean-360", "train-other-500")

LIBRISPEECH_SUBSETS: Final = (*LIBRISPEECH_TRAIN_SUBSETS, "dev-clean", "dev-other", "test-clean", "test-other")

TRAIN_960_SPLIT: Final = "train-960"
"""The union of the three training subsets, written when all three exist."""


def prepare_librispeech(root: Path, out_dir: Path, options: PrepareOptions) -> PrepareResult:
    """Writes ``out_dir/<subset>.jsonl`` for each subset under ``root`` (the
    ``LibriSpeech`` directory or its parent) and ``out_dir/train-960.jsonl``.

    Transcripts are kept as LibriSpeech writes them (upper case): the manifest
    reader normalises them.
    """
    corpus_dir = find_librispeech_dir(root)

    splits: dict[str, PreparedSplit] = {}

    for subset in LIBRISPEECH_SUBSETS:
        subset_dir = corpus_dir / subset

        if subset_dir.is_dir():
            utterances = read_librispeech_subset(subset_dir)

            splits[subset] = write_split(subset, utterances, out_dir, options)

    if all(subset in splits for subset in LIBRISPEECH_TRAIN_SUBSETS):
        train_splits = [splits[subset] for subset in LIBRISPEECH_TRAIN_SUBSETS]

        splits[TRAIN_960_SPLIT] = concatenate_splits(TRAIN_960_SPLIT, train_splits, out_dir)

    return PrepareResult(splits=list(splits.values()))


def find_librispeech_dir(root: Path) -> Path:
    """Returns the directory that holds the subsets: ``root`` or
    ``root/LibriSpeech``, as the official archives extract."""
    root = existing_dir(root, "LibriSpeech root")

    for corpus_dir in (root, root / "LibriSpeech"):
        if any((corpus_dir / subset).is_dir() for subset in LIBRISPEECH_SUBSETS):
            return corpus_dir

    raise PrepareError(
        f"{root}: no LibriSpeech subset ({', '.join(LIBRISPEECH_SUBSETS)}) in it or in its LibriSpeech/."
    )


def read_librispeech_subset(subset_dir: Path) -> list[Utterance]:
    """Reads the transcripts of a subset, in speaker, chapter and file order."""
    utterances = []

    for trans_file in sorted(subset_dir.glob("*/*/*.trans.txt"), key=_numeric_order):
        utterances.extend(_read_trans_file(trans_file))

    if not utterances:
        raise PrepareError(f"{subset_dir}: no `<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` transcript in it.")

    return utterances


def _numeric_order(trans_file: Path) -> tuple[int | str, ...]:
    # Speaker 19 before speaker 103, as LibriSpeech's own lists are ordered.
    return tuple(int(part) if part.isdigit() else part for part in trans_file.parts[-3:-1])


def _read_trans_file(trans_file: Path) -> list[Utterance]:
    chapter_dir = trans_file.parent

    speaker, chapter = chapter_dir.parent.name, chapter_dir.name

    id_prefix = f"{speaker}-{chapter}-"

    utterances = []

    with trans_file.open(encoding="utf-8") as fp:
        for line_nr, line in enumerate(fp, start=1):
            line = line.strip()
            if not line:
                continue

            utterance_id, _, text = line.partition(" ")

            text = text.strip()

            if not utterance_id.startswith(id_prefix) or not utterance_id[len(id_prefix) :].isdigit() or not text:
                raise PrepareError(
                    f"{trans_file}:{line_nr}: malformed transcript line {_shorten(line)!r}; "
                    f"expected `{id_prefix}NNNN TRANSCRIPT`."
                )

            utterances.append(
                Utterance(
                    id=utterance_id,
                    audio_path=chapter_dir / f"{utterance_id}.flac",
                    text=text,
                    source=f"{trans_file}:{line_nr}",
                    fields={"lang": "en", "speaker": speaker},
                )
            )

    return utterances


def _shorten(line: str, max_chars: int = 80) -> str:
    return line if len(line) <= max_chars else line[: max_chars - 3] + "..."
