"""The ``speech_manifest`` dataset family: per-split JSONL/TSV manifests read
with fairseq2's data pipeline into length-bucketed speech batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final

from fairseq2.datasets import DataReader
from fairseq2.gang import Gangs
from fairseq2.logging import log

from fairseq2_speechmapper.datasets.audio import InputPreparer, UtteranceLoader
from fairseq2_speechmapper.datasets.bad_samples import TextEncoder, bad_line_example
from fairseq2_speechmapper.datasets.batch import SpeechBatch
from fairseq2_speechmapper.datasets.manifest import (
    Manifest,
    ManifestError,
    ManifestRecord,
    find_split_manifests,
    read_manifest,
)
from fairseq2_speechmapper.datasets.options import LeftOutByDuration, SpeechReadOptions, count_left_out
from fairseq2_speechmapper.datasets.reader import SpeechDataReader

SPEECH_MANIFEST_FAMILY: Final = "speech_manifest"


@dataclass(kw_only=True)
class SpeechManifestDatasetConfig:
    manifest_dir: Path | None = None
    """A directory of per-split manifests: ``<split>.jsonl`` (NeMo style) or
    ``<split>.tsv`` (fairseq, transcripts in ``<split>.wrd`` or ``.ltr``)."""

    manifests: dict[str, Path] = field(default_factory=dict)
    """Manifest files by split name; added to, and overriding, ``manifest_dir``."""


@final
class SpeechManifestDataset:
    """Speech manifests by split."""

    def __init__(self, manifests: dict[str, Path]) -> None:
        self._manifests = manifests

    @staticmethod
    def from_config(config: SpeechManifestDatasetConfig) -> SpeechManifestDataset:
        manifests = {}

        if config.manifest_dir is not None:
            manifests.update(find_split_manifests(config.manifest_dir))

        manifests.update(config.manifests)

        if not manifests:
            where = config.manifest_dir if config.manifest_dir is not None else "the dataset configuration"

            raise ManifestError(f"{where}: no `<split>.jsonl` or `<split>.tsv` manifest found.")

        return SpeechManifestDataset(manifests)

    @property
    def splits(self) -> Sequence[str]:
        return sorted(self._manifests)

    @property
    def feature_cache(self) -> None:
        """Manifests are read as audio, never from a feature cache."""
        return None

    def describe_split(self, split: str, *, card_name: str | None) -> tuple[str, str]:
        """The test set ``split`` names in results, and its manifest: the
        dataset card ``card_name`` and the split when the card's manifests
        are read (``card_name`` set), else the manifest's path."""
        manifest = str(self.manifest_path(split))

        return (f"{card_name}:{split}" if card_name is not None else manifest), manifest

    def manifest_path(self, split: str) -> Path:
        path = self._manifests.get(split)
        if path is None:
            raise ManifestError(f"The dataset has no `{split}` split; its splits are {', '.join(self.splits)}.")

        return path

    def read_records(self, split: str, options: SpeechReadOptions) -> list[ManifestRecord]:
        """Reads and filters the manifest of ``split``."""
        return self._read_manifest(split, options)[0]

    def _read_manifest(
        self, split: str, options: SpeechReadOptions
    ) -> tuple[list[ManifestRecord], Manifest, LeftOutByDuration]:
        """The records of ``split`` its duration limits keep, the manifest read
        (with its bad lines) and what the limits left out."""
        manifest = read_manifest(
            self.manifest_path(split),
            on_bad_sample=options.on_bad_sample,
            check_audio_files=options.check_audio_files,
        )

        records = [r for r in manifest.records if options.accepts_duration(r.duration)]

        left_out = count_left_out(split, [r.duration for r in manifest.records], options)

        log.info(
            "Split `{}`: {} utterances ({:.2f} h) from {}; {} bad lines skipped, {} outside {}-{} s left out ({:.1%}).",
            split,
            len(records),
            sum(r.duration for r in records) / 3600,
            manifest.path,
            manifest.num_skipped,
            left_out.num_left_out,
            options.min_duration,
            options.max_duration,
            left_out.share,
        )

        if not records:
            raise ManifestError(
                f"{manifest.path}: no utterance lasts between {options.min_duration} s and {options.max_duration} s (`dataset.min_duration`, `dataset.max_duration`)."
            )

        return records, manifest, left_out

    def create_reader(
        self,
        split: str,
        gangs: Gangs,
        options: SpeechReadOptions,
        *,
        prepare_input: InputPreparer | None,
        encode_text: TextEncoder,
        training: bool,
        seed: int,
        num_accumulate: int = 1,
    ) -> DataReader[SpeechBatch]:
        """Creates a reader of ``split`` (see :class:`SpeechDataReader`),
        sharded over the data-parallel ranks: one pass per data epoch, shuffled
        anew every pass when training; the order depends only on ``seed``.

        :param prepare_input: The speech encoder frontend's input preparation (audio is
            read for a model that runs the speech encoder).
        """
        if prepare_input is None:
            raise TypeError("Audio manifests are read for a model that runs no speech encoder.")

        records, manifest, left_out = self._read_manifest(split, options)

        examples = [r.as_example() for r in records]

        # The lines skipped as bad at start-up are read as bad utterances: the
        # metrics count them, every epoch, with the bad audio met reading.
        examples += [bad_line_example(source, message) for source, message in manifest.bad_lines.items()]

        loader = UtteranceLoader(prepare_input, convert_audio=options.convert_audio)

        return SpeechDataReader(
            examples,
            split,
            gangs,
            options,
            load_example=loader,
            encode_text=encode_text,
            training=training,
            seed=seed,
            num_accumulate=num_accumulate,
            left_out=left_out,
        )


def open_speech_manifest_dataset(config: SpeechManifestDatasetConfig) -> SpeechManifestDataset:
    return SpeechManifestDataset.from_config(config)
