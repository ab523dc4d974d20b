"""The speech reader: examples into length-bucketed batches, sharded over the
data-parallel ranks, one pass of the split per data epoch; the one reader
behind audio manifests and feature caches, so both batch, shard and resume
alike."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from typing import Final, final

import torch
from typing_extensions import Self, override

from fairseq2.data.data_pipeline import DataPipeline, read_sequence
from fairseq2.datasets import DataPipelineReader, DataReader, SyncMode
from fairseq2.gang import Gangs, ReduceOperation, all_sum
from fairseq2.logging import log

from fairseq2_speechmapper.datasets.audio import BadSampleError
from fairseq2_speechmapper.datasets.bad_samples import BadSamples, SpeechBatchCollater, TextEncoder
from fairseq2_speechmapper.datasets.batch import SpeechBatch
from fairseq2_speechmapper.datasets.options import LeftOutByDuration, SpeechReadOptions
from fairseq2_speechmapper.datasets.text import TextNormalizer
from fairseq2_speechmapper.errors import SpeechMapperError

ExampleLoader = Callable[[dict[str, object]], dict[str, object]]
"""Adds an example's speech encoder input (``inputs``), or ``error`` (a
one-line reason naming the manifest line and file) for a bad utterance; it
must not raise for one (see :class:`UtteranceLoader`)."""

_STATE_KEYS: Final = ("pass_nr", "num_read")


def make_length_batches(examples: list[dict[str, object]], options: SpeechReadOptions) -> list[list[dict[str, object]]]:
    """Splits ``examples`` into batches of similar duration whose padded size
    (batch size × longest duration) stays within the budget."""
    if options.sort_window > 1:
        examples = sorted(examples, key=lambda e: float(e["duration"]))  # type: ignore[arg-type, misc]

    batches: list[list[dict[str, object]]] = []

    batch: list[dict[str, object]] = []

    longest = 0.0

    for example in examples:
        duration = float(example["duration"])  # type: ignore[arg-type, misc]

        padded_cost = (len(batch) + 1) * max(longest, duration)

        if batch and (padded_cost > options.max_batch_seconds or len(batch) == options.max_batch_size):
            batches.append(batch)

            batch, longest = [], 0.0

        batch.append(example)

        longest = max(longest, duration)

    if batch:
        batches.append(batch)

    return batches


def padding_fraction(batches: Sequence[Sequence[dict[str, object]]]) -> float:
    """The share of padded audio in ``batches`` (of manifest entries with a
    ``duration``): what length bucketing saves."""
    real = sum(float(e["duration"]) for b in batches for e in b)  # type: ignore[arg-type, misc]

    padded = sum(len(b) * max(float(e["duration"]) for e in b) for b in batches)  # type: ignore[arg-type, misc]

    return 0.0 if math.isclose(padded, 0.0) else 1.0 - real / padded


@final
class SpeechDataReader(DataReader[SpeechBatch]):
    """Reads one pass of a split's examples per data epoch (then
    ``StopIteration``; :meth:`reset` starts the next pass), shuffled anew
    each pass from the seed and the pass number alone when training.

    Its checkpoint state is its position (the pass and the batches read of
    it), not fairseq2n's pipeline state with its prefetched, decoded batches:
    a restored reader plans the pass again and skips the batches read.

    A bad utterance met with ``on_bad_sample="error"`` is raised here, on the
    main thread, as the :class:`BadSampleError` that names it, at the same
    step on every rank.
    """

    def __init__(
        self,
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
    ) -> None:
        errors = options.validate()
        if errors.has_error():
            raise ValueError(f"The read options are not valid: {errors}")

        self._examples = examples
        self._split = split
        self._gangs = gangs
        self._options = options
        self._load_example = load_example
        self._encode_text = encode_text
        self._normalize_text = TextNormalizer(options.text)
        self._training = training
        self._seed = seed
        self._num_accumulate = num_accumulate
        self._pass_nr = 0
        self._num_read = 0
        self._inner = self._open()

        self.left_out = left_out
        """What the duration limits left out of the split."""

    def _open(self) -> DataReader[dict[str, object]]:
        """The rest of the current pass: ``{"index": batch number in the
        pass, "batch": SpeechBatch | BadSamples}`` items."""
        options = self._options

        shuffle = self._training and options.shuffle

        builder = read_sequence(self._examples)

        if shuffle:
            builder.shuffle(0, seed=self._pass_seed("examples"))

        # Shard after the (seeded, so identical on every rank) shuffle: the
        # ranks read disjoint parts of the pass.
        builder.shard(self._gangs.dp.rank, self._gangs.dp.size, allow_uneven=True)

        # Without sorting, batches are still filled up to the budget from
        # consecutive utterances, not one utterance each. The last window of
        # a pass is cut short: no batch mixes two passes.
        window = options.sort_window if options.sort_window > 1 else options.max_batch_size

        builder.bucket(window).yield_from(lambda w: read_sequence(make_length_batches(w, options)).and_return())

        if shuffle and options.batch_shuffle_window > 1:
            builder.shuffle(options.batch_shuffle_window, seed=self._pass_seed("batches"))

        # Only the plan (examples, not audio or features) is read to skip.
        plan = builder.skip(self._num_read).and_return()

        numbers = DataPipeline.count(start=self._num_read).and_return()

        builder = DataPipeline.zip([numbers, plan], names=["index", "examples"], zip_to_shortest=True)

        builder.map(self._load_example, selector="examples[*]", num_parallel_calls=options.num_parallel_calls)

        collate = SpeechBatchCollater(self._normalize_text, self._encode_text, options.on_bad_sample)

        builder.map(lambda item: {"index": item["index"], "batch": collate(item["examples"])})

        builder.filter(lambda item: item["batch"] is not None).prefetch(options.num_prefetch)

        # Validation reads every rank's shard to its end.
        sync_mode = SyncMode.UNTIL_FIRST if self._training else SyncMode.UNTIL_LAST

        return DataPipelineReader[dict[str, object]](
            builder.and_return(), self._gangs, num_accumulate=self._num_accumulate, sync_mode=sync_mode
        )

    def _pass_seed(self, salt: str) -> int:
        digest = hashlib.sha256(f"{self._seed}/{self._pass_nr}/{salt}".encode()).digest()

        return int.from_bytes(digest[:8], "little") >> 1

    @override
    def __iter__(self) -> Self:
        return self

    @override
    def __next__(self) -> list[SpeechBatch]:
        items = next(self._inner)

        batches: list[SpeechBatch] = []

        messages: list[str] = []

        for item in items:
            batch = item["batch"]

            if isinstance(batch, BadSamples):
                messages.extend(batch.messages)
            else:
                batches.append(batch)  # type: ignore[arg-type, misc]

        self._raise_bad_samples(messages)

        self._num_read = int(items[-1]["index"]) + 1  # type: ignore[call-overload]

        if self._options.log_shard:
            ids = [i for batch in batches for i in batch.ids]

            log.info(
                "Split `{}`: rank {} of {} reads shard {}",
                self._split,
                self._gangs.dp.rank,
                self._gangs.dp.size,
                json.dumps(ids),
            )

        return batches

    def _raise_bad_samples(self, messages: list[str]) -> None:
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
        self._pass_nr, self._num_read = self._pass_nr + 1, 0

        self._inner = self._open()

    @override
    def state_dict(self) -> dict[str, object]:
        return {"pass_nr": self._pass_nr, "num_read": self._num_read}

    @override
    def load_state_dict(self, state_dict: dict[str, object]) -> None:
        if sorted(state_dict) != sorted(_STATE_KEYS):
            raise SpeechMapperError(
                f"The `{self._split}` reader's checkpoint state is not a reader position ({', '.join(sorted(state_dict))}); it was written by an older fairseq2-speechmapper: resume with that version, or start the run anew in another directory."
            )

        self._pass_nr, self._num_read = int(state_dict["pass_nr"]), int(state_dict["num_read"])  # type: ignore[call-overload]

        self._inner = self._open()

    @property
    @override
    def num_accumulate(self) -> int:
        return self._num_accumulate
