"""The ``speech_manifest`` dataset family: per-split JSONL/TSV manifests read
with fairseq2's data pipeline into length-bucketed speech batches."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar, final

import torch
from torch import Tensor
from typing_extensions import Self, override

from fairseq2.data.data_pipeline import DataPipeline, read_sequence
from fairseq2.datasets import DataPipelineReader, DataReader, SyncMode
from fairseq2.gang import Gangs
from fairseq2.logging import log
from fairseq2.nn.utils.padding import pad_seqs
from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.datasets.audio import BadSampleError, InputPreparer, UtteranceLoader
from fairseq2_speechmapper.datasets.batch import SpeechBatch, parse_fields
from fairseq2_speechmapper.datasets.manifest import (
    ManifestError,
    ManifestRecord,
    OnBadSample,
    find_split_manifests,
    read_manifest,
)
from fairseq2_speechmapper.datasets.text import TextNormalizationConfig, TextNormalizer

SPEECH_MANIFEST_FAMILY: Final = "speech_manifest"

_T = TypeVar("_T")


@dataclass(kw_only=True)
class SpeechManifestDatasetConfig:
    manifest_dir: Path | None = None
    """A directory of per-split manifests: ``<split>.jsonl`` (NeMo style) or
    ``<split>.tsv`` (fairseq, transcripts in ``<split>.wrd`` or ``.ltr``)."""

    manifests: dict[str, Path] = field(default_factory=dict)
    """Manifest files by split name; added to, and overriding, ``manifest_dir``."""


@dataclass(kw_only=True)
class SpeechReadOptions:
    """How a split is read into batches."""

    min_duration: float = 0.1
    """Utterances shorter than this (in seconds) are left out."""

    max_duration: float = 30.0
    """Utterances longer than this (in seconds) are left out."""

    max_left_out_share: float = 0.05
    """Warn when the duration limits leave out more than this share of a
    split's utterances (the count and share are always logged and recorded in
    ``metrics/data.jsonl``)."""

    max_batch_seconds: float = 320.0
    """The batch budget: batch size × longest utterance, in seconds of audio."""

    max_batch_size: int = 64
    """The most utterances per batch."""

    sort_window: int = 2000
    """Utterances sorted by length together to form batches of similar length
    (length bucketing); ``1`` turns bucketing off."""

    shuffle: bool = True
    """Shuffle utterances every epoch and batches within ``batch_shuffle_window``
    (training splits only; validation always reads in manifest order)."""

    batch_shuffle_window: int = 100

    num_parallel_calls: int = 4
    """Utterances decoded in parallel."""

    num_prefetch: int = 4
    """Batches prepared ahead of the training step."""

    on_bad_sample: OnBadSample = "error"
    """``error``: stop with a one-line error naming the manifest line and file;
    ``skip``: skip the utterance and count it (metric ``num_bad_samples``)."""

    convert_audio: bool = True
    """Resample to 16 kHz and downmix to mono; if ``False``, other audio is a
    bad sample."""

    check_audio_files: bool = True
    """Check at start-up that every audio file exists and is not empty."""

    log_shard: bool = False
    """Log the utterance ids of every batch this rank reads (to check sharding)."""

    text: TextNormalizationConfig = field(default_factory=TextNormalizationConfig)

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if not 0.0 <= self.min_duration <= self.max_duration:
            result.add_error(
                f"`min_duration` ({self.min_duration} s) must be between 0 and `max_duration` ({self.max_duration} s)."
            )

        if not 0.0 <= self.max_left_out_share <= 1.0:
            result.add_error(f"`max_left_out_share` must be between 0 and 1, but is {self.max_left_out_share}.")

        if self.max_duration > self.max_batch_seconds:
            result.add_error(
                f"`max_duration` ({self.max_duration} s) must not exceed `max_batch_seconds` ({self.max_batch_seconds} s), or the longest utterances fit no batch."
            )

        return result

    def accepts_duration(self, duration: float) -> bool:
        return self.min_duration <= duration <= self.max_duration


@final
@dataclass(kw_only=True)
class LeftOutByDuration:
    """The utterances of a split that the duration limits left out."""

    split: str

    num_utterances: int
    """The split's utterances before the limits."""

    num_left_out: int

    hours_left_out: float

    @property
    def share(self) -> float:
        return self.num_left_out / max(self.num_utterances, 1)

    def metric_values(self) -> dict[str, object]:
        return {
            "split": self.split,
            "num_utterances": self.num_utterances,
            "num_left_out_by_duration": self.num_left_out,
            "share_left_out_by_duration": self.share,
            "hours_left_out_by_duration": self.hours_left_out,
        }


def count_left_out(split: str, durations: Sequence[float], options: SpeechReadOptions) -> LeftOutByDuration:
    """Counts what the duration limits leave out of ``durations``; warns in one
    line when it is more than ``options.max_left_out_share``."""
    left_out = [d for d in durations if not options.accepts_duration(d)]

    report = LeftOutByDuration(
        split=split, num_utterances=len(durations), num_left_out=len(left_out), hours_left_out=sum(left_out) / 3600
    )

    if report.share > options.max_left_out_share:
        log.warning(
            "Split `{}`: the duration limits {}-{} s leave out {} of {} utterances ({:.1%}, {:.2f} h), more than `dataset.max_left_out_share` ({:.1%}); widen `dataset.min_duration`/`max_duration` to keep them.",
            split,
            options.min_duration,
            options.max_duration,
            report.num_left_out,
            report.num_utterances,
            report.share,
            report.hours_left_out,
            options.max_left_out_share,
        )

    return report


TextEncoder = Callable[[str], Tensor]

ExampleLoader = Callable[[dict[str, object]], dict[str, object]]
"""Adds an example's speech encoder input (``inputs``), or ``error`` (a
one-line reason) for a bad utterance that is to be skipped."""


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

    def manifest_path(self, split: str) -> Path:
        path = self._manifests.get(split)
        if path is None:
            raise ManifestError(f"The dataset has no `{split}` split; its splits are {', '.join(self.splits)}.")

        return path

    def read_records(self, split: str, options: SpeechReadOptions) -> list[ManifestRecord]:
        """Reads and filters the manifest of ``split``."""
        return self.read_filtered_records(split, options)[0]

    def read_filtered_records(
        self, split: str, options: SpeechReadOptions
    ) -> tuple[list[ManifestRecord], LeftOutByDuration]:
        """Reads and filters the manifest of ``split``; also returns what the
        duration limits left out."""
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

        return records, left_out

    def create_reader(
        self,
        split: str,
        gangs: Gangs,
        options: SpeechReadOptions,
        *,
        prepare_input: InputPreparer,
        encode_text: TextEncoder,
        training: bool,
        seed: int,
        num_accumulate: int = 1,
    ) -> DataReader[SpeechBatch]:
        """Creates a reader of ``split``, sharded over the data-parallel ranks.

        Training readers repeat forever (the trainer's regime decides when to
        stop), shuffled anew every epoch; the order depends only on ``seed``.
        """
        records, left_out = self.read_filtered_records(split, options)

        loader = UtteranceLoader(
            prepare_input,
            convert_audio=options.convert_audio,
            raise_errors=options.on_bad_sample == "error",
        )

        return create_speech_reader(
            [r.as_example() for r in records],
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


def create_speech_reader(
    examples: list[dict[str, object]],
    split: str,
    gangs: Gangs,
    options: SpeechReadOptions,
    *,
    load_example: ExampleLoader,
    encode_text: TextEncoder,
    training: bool,
    seed: int,
    num_accumulate: int = 1,
    left_out: LeftOutByDuration | None = None,
) -> SpeechDataReader:
    """Reads ``examples`` (``id``, ``duration``, ``text``, ``source``,
    ``fields`` and whatever ``load_example`` needs) into length-bucketed
    batches, sharded over the data-parallel ranks: the one reader behind
    audio manifests and feature caches, so both batch, shard and resume alike."""
    errors = options.validate()
    if errors.has_error():
        raise ValueError(f"The read options are not valid: {errors}")

    shuffle = training and options.shuffle

    builder = read_sequence(examples)

    if shuffle:
        builder.shuffle(0, seed=seed)

    if training:
        builder.repeat(None, reset_rng=False)

    # Shard after the (seeded, so identical on every rank) shuffle: the
    # ranks read disjoint parts of each epoch.
    builder.shard(gangs.dp.rank, gangs.dp.size, allow_uneven=True)

    def batch_window(window: list[dict[str, object]]) -> DataPipeline:
        return read_sequence(make_length_batches(window, options)).and_return()

    # Without sorting, batches are still filled up to the budget from
    # consecutive utterances, not one utterance each.
    window = options.sort_window if options.sort_window > 1 else options.max_batch_size

    builder.bucket(window).yield_from(batch_window)

    if shuffle and options.batch_shuffle_window > 1:
        builder.shuffle(options.batch_shuffle_window, seed=seed + 1)

    normalize_text = TextNormalizer(options.text)

    builder.map(load_example, selector="[*]", num_parallel_calls=options.num_parallel_calls)

    def collate(examples: list[dict[str, object]]) -> SpeechBatch | None:
        return collate_speech_batch(examples, normalize_text, encode_text)

    builder.map(collate).filter(lambda batch: batch is not None)

    builder.prefetch(options.num_prefetch)

    pipeline = builder.and_return()

    # Validation reads every rank's shard to its end.
    sync_mode = SyncMode.UNTIL_FIRST if training else SyncMode.UNTIL_LAST

    reader = DataPipelineReader[SpeechBatch](pipeline, gangs, num_accumulate=num_accumulate, sync_mode=sync_mode)

    return SpeechDataReader(reader, split=split, gangs=gangs, log_shard=options.log_shard, left_out=left_out)


def make_length_batches(examples: list[dict[str, object]], options: SpeechReadOptions) -> list[list[dict[str, object]]]:
    """Splits ``examples`` into batches of similar duration whose padded size
    (batch size × longest duration) stays within the budget."""
    if options.sort_window > 1:
        examples = sorted(examples, key=lambda e: float(e["duration"]))  # type: ignore[arg-type]

    batches: list[list[dict[str, object]]] = []

    batch: list[dict[str, object]] = []

    longest = 0.0

    for example in examples:
        duration = float(example["duration"])  # type: ignore[arg-type]

        padded_cost = (len(batch) + 1) * max(longest, duration)

        if batch and (padded_cost > options.max_batch_seconds or len(batch) == options.max_batch_size):
            batches.append(batch)

            batch, longest = [], 0.0

        batch.append(example)

        longest = max(longest, duration)

    if batch:
        batches.append(batch)

    return batches


def collate_speech_batch(
    examples: list[dict[str, object]], normalize_text: TextNormalizer, encode_text: TextEncoder
) -> SpeechBatch | None:
    """Pads the prepared inputs of ``examples``; skipped bad utterances are
    logged and counted. Returns ``None`` if no utterance is left."""
    good_examples = []

    for example in examples:
        error = example.get("error")
        if error is None:
            good_examples.append(example)
        else:
            log.warning("Skipping bad utterance. {}", error)

    num_bad_samples = len(examples) - len(good_examples)

    if not good_examples:
        return None

    inputs: list[Tensor] = [e["inputs"] for e in good_examples]  # type: ignore[misc]

    padded_inputs, layout = pad_seqs(inputs)

    input_lens = [int(x.size(0)) for x in inputs]

    raw_texts = [str(e["text"]) for e in good_examples]

    texts = [normalize_text(t) for t in raw_texts]

    return SpeechBatch(
        inputs=padded_inputs,
        input_lens=input_lens,
        texts=texts,
        raw_texts=raw_texts,
        target_ids=[encode_text(t).to(torch.int64) if t else torch.empty(0, dtype=torch.int64) for t in texts],
        ids=[str(e["id"]) for e in good_examples],
        sources=[str(e["source"]) for e in good_examples],
        fields=[parse_fields(str(e["fields"])) for e in good_examples],
        num_bad_samples=num_bad_samples,
    )


@final
class SpeechDataReader(DataReader[SpeechBatch]):
    """Reads speech batches; a bad utterance surfaces as the
    :class:`BadSampleError` that names it rather than as a generic pipeline
    failure."""

    def __init__(
        self,
        inner: DataReader[SpeechBatch],
        *,
        split: str,
        gangs: Gangs,
        log_shard: bool,
        left_out: LeftOutByDuration | None = None,
    ) -> None:
        self._inner = inner
        self._split = split
        self._gangs = gangs
        self._log_shard = log_shard

        self.left_out = left_out
        """What the duration limits left out of the split."""

    @override
    def __iter__(self) -> Self:
        return self

    @override
    def __next__(self) -> list[SpeechBatch]:
        batches = next_surfacing_bad_sample(self._inner)

        if self._log_shard:
            ids = [i for batch in batches for i in batch.ids]

            log.info(
                "Split `{}`: rank {} of {} reads shard {}",
                self._split,
                self._gangs.dp.rank,
                self._gangs.dp.size,
                json.dumps(ids),
            )

        return batches

    @override
    def reset(self) -> None:
        self._inner.reset()

    @override
    def state_dict(self) -> dict[str, object]:
        return self._inner.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, object]) -> None:
        self._inner.load_state_dict(state_dict)

    @property
    @override
    def num_accumulate(self) -> int:
        return self._inner.num_accumulate


def next_surfacing_bad_sample(iterator: Iterator[_T]) -> _T:
    """``next(iterator)`` of a data pipeline (or a reader of one), a bad
    utterance surfacing as the :class:`BadSampleError` that names it rather
    than as the generic error fairseq2n wraps it in."""
    try:
        return next(iterator)
    except StopIteration:
        raise
    except Exception as ex:  # fairseq2n wraps map errors in plain RuntimeErrors
        bad_sample_error = find_bad_sample_error(ex)
        if bad_sample_error is None:
            raise

        raise BadSampleError(str(bad_sample_error)) from None


def find_bad_sample_error(ex: BaseException) -> BadSampleError | None:
    cause: BaseException | None = ex

    while cause is not None:
        if isinstance(cause, BadSampleError):
            return cause

        cause = cause.__cause__ or cause.__context__

    return None


def open_speech_manifest_dataset(config: SpeechManifestDatasetConfig) -> SpeechManifestDataset:
    return SpeechManifestDataset.from_config(config)
