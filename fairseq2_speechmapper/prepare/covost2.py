"""CoVoST 2 speech translation manifests: Common Voice clips with the
translations of CoVoST 2.

CoVoST 2 ships one TSV per language pair, ``covost_v2.<src>_<tgt>.tsv``
(``path``, ``translation``, ``split``; the transcripts stay in Common Voice's
``validated.tsv``). Its script ``get_covost_splits.py`` turns it into
``covost_v2.<src>_<tgt>.<split>.tsv`` (``path``, ``sentence``,
``translation``, ``client_id``). Either is read; the split files first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Final, final

from .common_voice import common_voice_utterance, read_tsv
from .manifest import PrepareError, PrepareOptions, PrepareResult, Utterance, existing_dir, write_split

COVOST2_SPLITS: Final = ("train", "dev", "test")

SKIPPED_NOT_VALIDATED: Final = "not in validated.tsv"

# CoVoST 2's training set adds the Common Voice clips it took beyond CV's own
# train split (`train_covost`), as its `get_covost_splits.py` does.
_SPLIT_VALUES: Final = {"train": ("train", "train_covost")}


def prepare_covost2(
    cv_root: Path,
    covost_dir: Path,
    out_dir: Path,
    options: PrepareOptions,
    *,
    src: str,
    tgt: str,
    splits: Sequence[str] = COVOST2_SPLITS,
) -> PrepareResult:
    """Writes ``out_dir/<split>.jsonl`` with the transcript as ``text`` and
    the ``translation``, ``lang`` and ``tgt_lang`` fields.

    :param cv_root: Common Voice's directory of the source language (with
        ``validated.tsv`` and ``clips/``).
    :param covost_dir: the directory with CoVoST 2's TSV files of the pair.
    """
    cv_root = existing_dir(cv_root, "Common Voice language directory")
    covost_dir = existing_dir(covost_dir, "CoVoST 2 TSV directory")

    reader = _CoVoST2Reader(cv_root, covost_dir, src=src, tgt=tgt)

    prepared = []

    for split in splits:
        utterances, skipped = reader.read_split(split)

        prepared.append(write_split(split, utterances, out_dir, options, skipped=skipped))

    return PrepareResult(splits=prepared)


@final
class _CoVoST2Reader:
    def __init__(self, cv_root: Path, covost_dir: Path, *, src: str, tgt: str) -> None:
        self._cv_root = cv_root
        self._covost_dir = covost_dir
        self._src = src
        self._tgt = tgt

        # The combined TSV and validated.tsv, read once for all splits.
        self._combined_rows: list[tuple[str, dict[str, str]]] | None = None
        self._validated_rows: dict[str, tuple[str, dict[str, str]]] | None = None

    def read_split(self, split: str) -> tuple[list[Utterance], Counter[str]]:
        split_file = self._covost_dir / f"covost_v2.{self._src}_{self._tgt}.{split}.tsv"

        if split_file.is_file():
            return self._read_split_file(split_file), Counter()

        return self._read_combined_split(split, split_file)

    def _read_split_file(self, split_file: Path) -> list[Utterance]:
        return [
            self._utterance(row, row, f"{split_file}:{line_nr}")
            for line_nr, row in read_tsv(split_file, ("path", "sentence", "translation", "client_id"))
        ]

    def _read_combined_split(self, split: str, split_file: Path) -> tuple[list[Utterance], Counter[str]]:
        combined_file = self._covost_dir / f"covost_v2.{self._src}_{self._tgt}.tsv"

        if not combined_file.is_file():
            archive = combined_file.with_name(combined_file.name + ".tar.gz")

            hint = f" Extract {archive.name} first." if archive.is_file() else ""

            raise PrepareError(
                f"{combined_file}: CoVoST 2's TSV of {self._src}-{self._tgt} does not exist, nor does {split_file.name}.{hint}"
            )

        if self._combined_rows is None:
            self._combined_rows = [
                (f"{combined_file}:{line_nr}", row)
                for line_nr, row in read_tsv(combined_file, ("path", "translation", "split"))
            ]

        if self._validated_rows is None:
            validated_file = self._cv_root / "validated.tsv"

            self._validated_rows = {
                row["path"]: (f"{validated_file}:{line_nr}", row)
                for line_nr, row in read_tsv(validated_file, ("client_id", "path", "sentence"))
            }

        split_values = _SPLIT_VALUES.get(split, (split,))

        utterances = []

        skipped: Counter[str] = Counter()

        for source, row in self._combined_rows:
            if row["split"] not in split_values:
                continue

            validated = self._validated_rows.get(row["path"])

            # As CoVoST's own join: a clip that left validated.tsv has no transcript.
            if validated is None:
                skipped[SKIPPED_NOT_VALIDATED] += 1

                continue

            utterances.append(self._utterance(validated[1], row, source))

        if not utterances and not skipped:
            raise PrepareError(f"{combined_file}: no row of the split `{split}`.")

        return utterances, skipped

    def _utterance(self, cv_row: dict[str, str], covost_row: dict[str, str], source: str) -> Utterance:
        utterance = common_voice_utterance(self._cv_root, cv_row, source, lang=self._src)

        utterance.fields.update(translation=covost_row["translation"], tgt_lang=self._tgt)

        return utterance
