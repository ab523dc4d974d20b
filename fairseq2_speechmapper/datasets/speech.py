"""The ``speech_manifest`` dataset family: per-split JSONL/TSV manifests read
with fairseq2's data pipeline into length-bucketed speech batches."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final, get_args

import torch
from torch import Tensor
from typing_extensions import Self, override

from fairseq2.data.data_pipeline import DataPipeline, read_sequence
from fairseq2.datasets import DataPipelineReader, DataReader, SyncMode
from fairseq2.gang import Gangs, ReduceOperation, all_sum
from fairseq2.logging import log
from fairseq2.nn.utils.padding import pad_seqs
from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.datasets.audio import BadSampleError, InputPreparer, UtteranceLoader
from fairseq2_speechmapper.datasets.batch import SpeechBatch, parse_fields
from fairseq2_speechmapper.datasets.manifest import (
    Manifest,
    ManifestError,
    ManifestRecord,
    OnBadSample,
    find_split_manifests,
    read_manifest,
)
from fairseq2_speechmapper.datasets.text import TextNormalizationConfig, TextNormalizer

SPEECH_MANIFEST_FAMILY: Final = "speech_manifest"


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

        if self.on_bad_sample not in get_args(OnBadSample):
            result.add_error(f"`on_bad_sample` must be `error` or `skip`, but is {self.on_bad_sample!r}.")

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
one-line reason naming the manifest line and file) for a bad utterance; it
must not raise for one (see :class:`UtteranceLoader`)."""


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
        records, manifest, left_out = self._read_manifest(split, options)

        examples = [r.as_example() for r in records]

        # The lines skipped as bad at start-up are read as bad utterances: the
        # metrics count them, every epoch, with the bad audio met reading.
        examples += [bad_line_example(source, message) for source, message in manifest.bad_lines.items()]

        loader = UtteranceLoader(prepare_input, convert_audio=options.convert_audio)

        return create_speech_reader(
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


def bad_line_example(source: str, message: str) -> dict[str, object]:
    """A reader example for a manifest line that is bad as written."""
    return {
        "id": source,
        "audio_path": "",
        "offset": 0.0,
        "duration": 0.0,
        "text": "",
        "source": source,
        "fields": "{}",
        "error": message,
    }


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

    def collate(examples: list[dict[str, object]]) -> SpeechBatch | BadSamples | None:
        return collate_speech_batch(examples, normalize_text, encode_text, on_bad_sample=options.on_bad_sample)

    def reload(bad_samples: BadSamples) -> SpeechBatch | BadSamples | None:
        return reload_bad_samples(bad_samples, examples_by_source, load_example, collate)

    examples_by_source = {str(e["source"]): e for e in examples}

    num_unreported_bad_samples = 0

    def collate_and_count(examples: list[dict[str, object]]) -> SpeechBatch | BadSamples | None:
        nonlocal num_unreported_bad_samples

        batch = collate(examples)

        # A batch of bad utterances only is dropped; the next batch counts them.
        if batch is None:
            num_unreported_bad_samples += len(examples)
        elif isinstance(batch, SpeechBatch):
            batch.num_bad_samples += num_unreported_bad_samples

            num_unreported_bad_samples = 0

        return batch

    builder.map(collate_and_count).filter(lambda batch: batch is not None)

    builder.prefetch(options.num_prefetch)

    pipeline = builder.and_return()

    # Validation reads every rank's shard to its end.
    sync_mode = SyncMode.UNTIL_FIRST if training else SyncMode.UNTIL_LAST

    reader = DataPipelineReader[SpeechBatch | BadSamples](
        pipeline, gangs, num_accumulate=num_accumulate, sync_mode=sync_mode
    )

    return SpeechDataReader(
        reader, split=split, gangs=gangs, reload=reload, log_shard=options.log_shard, left_out=left_out
    )


def reload_bad_samples(
    bad_samples: BadSamples,
    examples_by_source: dict[str, dict[str, object]],
    load_example: ExampleLoader,
    collate: Callable[[list[dict[str, object]]], SpeechBatch | BadSamples | None],
) -> SpeechBatch | BadSamples | None:
    """Loads the bad utterances of ``bad_samples`` again, from their manifest
    lines as they are now.

    fairseq2n saves the prefetched batches in the data reader's checkpoint
    state, and with them the bad utterance that stopped the run; restored,
    it would stop the resumed run again after the user fixed the line (or
    the file). Only a batch that met a bad utterance pays for this.
    """
    examples = []

    for example in bad_samples.examples:
        if "error" in example:
            current = examples_by_source.get(str(example["source"]))
            if current is not None:
                example = load_example(dict(current))

        examples.append(example)

    return collate(examples)


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


@final
@dataclass(kw_only=True)
class BadSamples:
    """Stands in the data pipeline for a batch that met bad utterances when
    they are errors: the reader raises them on the main thread."""

    examples: list[dict[str, object]]
    """The batch's examples as loaded, the bad ones with their ``error``."""

    @property
    def messages(self) -> list[str]:
        """One line per bad utterance, naming its manifest line and file."""
        return [str(e["error"]) for e in self.examples if "error" in e]


def collate_speech_batch(
    examples: list[dict[str, object]],
    normalize_text: TextNormalizer,
    encode_text: TextEncoder,
    *,
    on_bad_sample: OnBadSample = "skip",
) -> SpeechBatch | BadSamples | None:
    """Pads the prepared inputs of ``examples``. Bad utterances are skipped,
    logged and counted, or, with ``on_bad_sample="error"``, returned as
    :class:`BadSamples`. Returns ``None`` if no utterance is left."""
    good_examples, messages = [], []

    for example in examples:
        error = example.get("error")
        if error is None:
            good_examples.append(example)
        else:
            messages.append(str(error))

    if messages and on_bad_sample == "error":
        return BadSamples(examples=examples)

    for message in messages:
        log.warning("Skipping bad utterance. {}", message)

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
        num_bad_samples=len(messages),
    )


@final
class SpeechDataReader(DataReader[SpeechBatch]):
    """Reads speech batches; a bad utterance met with
    ``on_bad_sample="error"`` is raised here, on the main thread, as the
    :class:`BadSampleError` that names it, never inside the data pipeline
    (whose ``state_dict()`` would raise it again at the next checkpoint)."""

    def __init__(
        self,
        inner: DataReader[SpeechBatch | BadSamples],
        *,
        split: str,
        gangs: Gangs,
        reload: Callable[[BadSamples], SpeechBatch | BadSamples | None],
        log_shard: bool,
        left_out: LeftOutByDuration | None = None,
    ) -> None:
        """
        :param reload: Loads a batch's bad utterances again (see
            :func:`reload_bad_samples`).
        :param left_out: What the duration limits left out of the split.
        """
        self._inner = inner
        self._split = split
        self._gangs = gangs
        self._reload = reload
        self._log_shard = log_shard

        self.left_out = left_out
        """What the duration limits left out of the split."""

    @override
    def __iter__(self) -> Self:
        return self

    @override
    def __next__(self) -> list[SpeechBatch]:
        batches: list[SpeechBatch] = []

        messages: list[str] = []

        for item in next(self._inner):
            batch = self._reload(item) if isinstance(item, BadSamples) else item

            if isinstance(batch, BadSamples):
                messages.extend(batch.messages)
            elif batch is not None:
                batches.append(batch)

        # Every rank stops at the same step, so none waits for the others in
        # a collective that never comes.
        num_bad_samples = len(messages)

        if self._gangs.dp.size > 1:
            num_bad_samples = int(all_sum(self._gangs.dp, num_bad_samples).item())

        if num_bad_samples > 0:
            message = messages[0] if messages else None

            if self._gangs.root.size > 1:
                message = self._first_rank_message(message)

            raise BadSampleError(str(message))

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

    def _first_rank_message(self, message: str | None) -> str | None:
        """The message of the first rank that met a bad utterance, on every
        rank: each rank's console then says what to fix."""
        gang = self._gangs.root

        first_rank = torch.tensor(gang.rank if message is not None else gang.size, device=gang.device)

        gang.all_reduce(first_rank, ReduceOperation.MIN)

        # The root gang's ranks are the global ranks that broadcasting names.
        messages: list[object] = [message]

        gang.broadcast_objects(messages, source_rank=int(first_rank))

        return str(messages[0])

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


def open_speech_manifest_dataset(config: SpeechManifestDatasetConfig) -> SpeechManifestDataset:
    return SpeechManifestDataset.from_config(config)
