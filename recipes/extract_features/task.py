"""The extraction task: this rank's unfinished shards of each split, through
the frozen speech encoder, into the feature cache; each shard written whole or not at all."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import final

from torch import Tensor
from typing_extensions import override

from fairseq2.data.data_pipeline import read_sequence
from fairseq2.gang import Gangs
from fairseq2.logging import log
from fairseq2.nn import BatchLayout
from fairseq2.nn.utils.padding import pad_seqs
from fairseq2.task import Task, TaskStopException

from fairseq2_speechmapper.datasets import SpeechManifestDataset
from fairseq2_speechmapper.datasets.audio import BadSampleError, UtteranceLoader
from fairseq2_speechmapper.features.cache import FeatureCache, FeatureCacheHeader, SplitPlan
from fairseq2_speechmapper.features.storage import log_storage
from fairseq2_speechmapper.features.writer import FeatureCacheWriter, PendingShard, pending_shards
from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection
from fairseq2_speechmapper.speech_encoders import SpeechEncoder


@final
class FeatureExtractionTask(Task):
    """Extracts this rank's unfinished shards of each split, then (rank 0)
    reports the cache's size."""

    def __init__(
        self,
        output_dir: Path,
        header: FeatureCacheHeader,
        speech_encoder: SpeechEncoder,
        dataset: SpeechManifestDataset,
        splits: list[str],
        section: SpeechDatasetSection,
        *,
        shard_size: int,
        gangs: Gangs,
    ) -> None:
        self._cache = FeatureCache(output_dir, header)
        self._writer = FeatureCacheWriter(self._cache, rank=gangs.root.rank, shard_size=shard_size)
        self._speech_encoder = speech_encoder
        self._dtype = next(speech_encoder.parameters()).dtype
        self._dataset = dataset
        self._splits = splits
        self._section = section
        self._gangs = gangs
        self._step_nr = 0
        self._stop_requested = False

    @override
    def run(self) -> None:
        gangs = self._gangs

        log.info("Extracting {} into {}.", self._cache.header.describe(), self._cache.directory)

        # All ranks check what is there; rank 0 writes what is not; then all
        # start (a directory of other features fails on every rank alike).
        self._writer.write_or_check_header()

        plans = [self._plan_split(split) for split in self._splits]

        gangs.root.barrier()

        start_time, audio_seconds = time.perf_counter(), 0.0

        for plan, examples in plans:
            audio_seconds += self._extract_split(plan, examples)

        elapsed = time.perf_counter() - start_time

        log.info(
            "Rank {} extracted {} shard(s), {:.1f} s of audio, in {:.1f} s: {:.1f} audio seconds per second.",
            gangs.root.rank,
            self._step_nr,
            audio_seconds,
            elapsed,
            audio_seconds / elapsed if elapsed > 0 else 0.0,
        )

        gangs.root.barrier()

        if gangs.root.rank == 0:
            log_storage(self._cache, self._splits)

    def _plan_split(self, split: str) -> tuple[SplitPlan, list[dict[str, object]]]:
        examples = [r.as_example() for r in self._dataset.read_records(split, self._section)]

        plan = self._writer.plan_split(
            split, examples, manifest=self._dataset.manifest_path(split), section=self._section
        )

        return plan, examples

    def _extract_split(self, plan: SplitPlan, examples: list[dict[str, object]]) -> float:
        """Extracts this rank's unfinished shards of the split; returns the
        seconds of audio extracted."""
        split, rank, world_size = plan.split, self._gangs.root.rank, self._gangs.root.size

        own_shards = plan.shards_of_rank(rank, world_size)

        finished = self._writer.remove_damaged_shards(split, own_shards)

        todo = [i for i in own_shards if i not in finished]

        log.info(
            "Split `{}`: {} shard(s) of {} utterances, {} for rank {} of {}, {} of them already extracted.",
            split,
            plan.num_shards,
            plan.shard_size,
            len(own_shards),
            rank,
            world_size,
            len(own_shards) - len(todo),
        )

        pending, batches = pending_shards(plan, examples, todo, self._section)

        audio_seconds = 0.0

        for batch in self._load_batches(batches):
            shard = pending[int(batch[0]["shard_idx"])]  # type: ignore[call-overload]

            self._encode_batch(batch, shard)

            if shard.is_complete:
                self._writer.write_shard(shard)

                self._step_nr += 1

                audio_seconds += shard.audio_seconds

                del pending[shard.shard_idx]

                if self._stop_requested:
                    raise TaskStopException()

        return audio_seconds

    def _load_batches(self, batches: list[list[dict[str, object]]]) -> Iterator[list[dict[str, object]]]:
        section = self._section

        loader = UtteranceLoader(self._speech_encoder.prepare_input, convert_audio=section.convert_audio)

        builder = read_sequence(batches).map(loader, selector="[*]", num_parallel_calls=section.num_parallel_calls)

        yield from builder.prefetch(section.num_prefetch).and_return()

    def _encode_batch(self, batch: list[dict[str, object]], shard: PendingShard) -> None:
        good = []

        for example in batch:
            if "error" in example:
                # Raised here, not in the pipeline's map function: the
                # finished shards are kept, and the same command resumes.
                if self._section.on_bad_sample == "error":
                    raise BadSampleError(str(example["error"]))

                shard.skip_bad_sample(example)
            else:
                good.append(example)

        if not good:
            return

        utterance_inputs: list[Tensor] = [e["inputs"] for e in good]  # type: ignore[misc]

        inputs, _ = pad_seqs(utterance_inputs)

        # As the pretraining batch would: padded on the CPU, then moved and cast.
        inputs = inputs.to(self._gangs.root.device).to(self._dtype)

        inputs_layout = BatchLayout.of(inputs, [int(x.size(0)) for x in utterance_inputs])

        features, features_layout = self._speech_encoder(inputs, inputs_layout)

        for row, (example, num_frames) in enumerate(zip(good, features_layout.seq_lens)):
            position = int(example["position"])  # type: ignore[call-overload]

            self._writer.add_features(shard, position, features[row, :num_frames], example["source"])

    @override
    def request_stop(self) -> None:
        self._stop_requested = True

    @property
    @override
    def step_nr(self) -> int:
        return self._step_nr

    @override
    def close(self) -> None:
        pass
