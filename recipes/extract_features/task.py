"""The extraction task: this rank's unfinished shards of each split, through
the frozen SFM, into the feature cache; each shard written whole or not at all."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import final

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import Tensor
from typing_extensions import override

from fairseq2.data.data_pipeline import read_sequence
from fairseq2.gang import Gangs
from fairseq2.logging import log
from fairseq2.nn import BatchLayout
from fairseq2.nn.utils.padding import pad_seqs
from fairseq2.task import Task, TaskStopException

from fairseq2_speechmapper.datasets import SpeechManifestDataset, make_length_batches
from fairseq2_speechmapper.datasets.audio import BadSampleError, UtteranceLoader
from fairseq2_speechmapper.features.cache import (
    FEATURES_KEY,
    HEADER_FILE,
    PLAN_FILE,
    FeatureCache,
    FeatureCacheError,
    FeatureCacheHeader,
    SplitPlan,
    hash_examples,
    shard_name,
)
from fairseq2_speechmapper.features.storage import measure_storage
from fairseq2_speechmapper.files import write_file_atomically, write_json_atomically
from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection
from fairseq2_speechmapper.speech_encoders import SpeechEncoder


@final
@dataclass(kw_only=True)
class _PendingShard:
    split: str
    shard_idx: int
    num_utterances: int
    audio_seconds: float
    features: dict[int, Tensor] = field(default_factory=dict)
    """The stored features by position in the shard."""
    bad_samples: dict[int, str] = field(default_factory=dict)
    """Why each skipped bad utterance is bad, by position in the shard."""

    @property
    def num_bad_samples(self) -> int:
        return len(self.bad_samples)


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
        self._speech_encoder = speech_encoder
        self._dtype = next(speech_encoder.parameters()).dtype
        self._dataset = dataset
        self._splits = splits
        self._section = section
        self._shard_size = shard_size
        self._gangs = gangs
        self._step_nr = 0
        self._stop_requested = False

    @override
    def run(self) -> None:
        gangs = self._gangs

        log.info("Extracting {} into {}.", self._cache.header.describe(), self._cache.directory)

        # All ranks check what is there; rank 0 writes what is not; then all
        # start (a directory of other features fails on every rank alike).
        self._write_or_check_header()

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
            report = measure_storage(self._cache, self._splits)

            log.info("Feature cache {} ({}):", self._cache.directory, ", ".join(self._splits))

            for line in report.summary_lines():
                log.info("  {}", line)

    def _write_or_check_header(self) -> None:
        header, header_file = self._cache.header, self._cache.directory / HEADER_FILE

        if header_file.is_file():
            existing = FeatureCache.open(self._cache.directory).header

            if existing != header:
                raise FeatureCacheError(
                    f"{self._cache.directory}: the directory holds features of {existing.describe()}, not of {header.describe()}; features of another SFM, layer, option or dtype are never mixed into a cache: extract into another directory."
                )
        elif self._gangs.root.rank == 0:
            write_json_atomically(header_file, header.to_json())

    def _plan_split(self, split: str) -> tuple[SplitPlan, list[dict[str, object]]]:
        records = self._dataset.read_records(split, self._section)

        examples = [r.as_example() for r in records]

        plan = SplitPlan(
            split=split,
            manifest=str(self._dataset.manifest_path(split)),
            records_sha256=hash_examples(examples),
            num_utterances=len(examples),
            audio_seconds=sum(r.duration for r in records),
            min_duration=self._section.min_duration,
            max_duration=self._section.max_duration,
            shard_size=self._shard_size,
        )

        existing = self._cache.read_plan(split)

        if existing is None:
            if self._gangs.root.rank == 0:
                split_dir = self._cache.split_dir(split)

                split_dir.mkdir(parents=True, exist_ok=True)

                write_json_atomically(split_dir / PLAN_FILE, plan.to_json())
        elif existing != plan:
            raise FeatureCacheError(
                f"{self._cache.split_dir(split)}: the `{split}` split was started from other utterances or another shard size ({existing.num_utterances} utterances of {existing.manifest} in shards of {existing.shard_size}); its manifest, `dataset.min_duration`/`max_duration` or `storage.shard_size` changed: extract into another directory, or delete {self._cache.split_dir(split)} to start the split over."
            )

        return plan, examples

    def _extract_split(self, plan: SplitPlan, examples: list[dict[str, object]]) -> float:
        """Extracts this rank's unfinished shards of the split; returns the
        seconds of audio extracted."""
        split, rank, world_size = plan.split, self._gangs.root.rank, self._gangs.root.size

        own_shards = plan.shards_of_rank(rank, world_size)

        finished = self._cache.finished_shards(split)

        for shard_idx in own_shards:
            if shard_idx in finished:
                problem = self._cache.shard_problem(split, shard_idx)

                # A truncated or damaged shard (a crash of the machine, a bad
                # copy) is extracted again rather than kept.
                if problem is not None:
                    log.warning("Split `{}`: extracting {} again. {}", split, shard_name(shard_idx), problem)

                    self._cache.remove_shard(split, shard_idx)

                    finished.discard(shard_idx)

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

        pending: dict[int, _PendingShard] = {}

        batches = []

        for shard_idx in todo:
            shard_examples = examples[shard_idx * plan.shard_size : (shard_idx + 1) * plan.shard_size]

            pending[shard_idx] = _PendingShard(
                split=split,
                shard_idx=shard_idx,
                num_utterances=len(shard_examples),
                audio_seconds=sum(float(e["duration"]) for e in shard_examples),  # type: ignore[arg-type, misc]
            )

            positioned = [{**e, "shard_idx": shard_idx, "position": pos} for pos, e in enumerate(shard_examples)]

            # Length-bucketed within the shard, so a shard is done at once.
            batches.extend(make_length_batches(positioned, self._section))

        audio_seconds = 0.0

        for batch in self._load_batches(batches):
            shard = pending[int(batch[0]["shard_idx"])]  # type: ignore[call-overload]

            self._encode_batch(batch, shard)

            if len(shard.features) + shard.num_bad_samples == shard.num_utterances:
                first = shard.shard_idx * plan.shard_size

                self._write_shard(shard, examples[first : first + plan.shard_size])

                audio_seconds += shard.audio_seconds

                del pending[shard.shard_idx]

                if self._stop_requested:
                    raise TaskStopException()

        return audio_seconds

    def _load_batches(self, batches: list[list[dict[str, object]]]) -> Iterator[list[dict[str, object]]]:
        section = self._section

        loader = UtteranceLoader(self._speech_encoder.prepare_input, convert_audio=section.convert_audio)

        pipeline = (
            read_sequence(batches)
            .map(loader, selector="[*]", num_parallel_calls=section.num_parallel_calls)
            .prefetch(section.num_prefetch)
            .and_return()
        )

        yield from pipeline

    def _encode_batch(self, batch: list[dict[str, object]], shard: _PendingShard) -> None:
        good = []

        for example in batch:
            if "error" in example:
                # Raised here, not in the pipeline's map function: the
                # finished shards are kept, and the same command resumes.
                if self._section.on_bad_sample == "error":
                    raise BadSampleError(str(example["error"]))

                log.warning("Skipping bad utterance. {}", example["error"])

                shard.bad_samples[int(example["position"])] = str(example["error"])  # type: ignore[call-overload]
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

        header = self._cache.header

        storage_dtype = header.storage_dtype

        for row, (example, num_frames) in enumerate(zip(good, features_layout.seq_lens)):
            utterance = average_frames(features[row, :num_frames].float(), header.frame_average).to(storage_dtype)

            if not torch.isfinite(utterance).all():
                raise FeatureCacheError(
                    f"{example['source']}: the features overflow {header.dtype}; extract with `storage.dtype=bfloat16` or `float32`."
                )

            shard.features[int(example["position"])] = utterance.cpu()  # type: ignore[call-overload]

    def _write_shard(self, shard: _PendingShard, shard_examples: list[dict[str, object]]) -> None:
        split_dir = self._cache.split_dir(shard.split)

        name = shard_name(shard.shard_idx)

        index_lines, tensors, offset = [], [], 0

        # Manifest order. The bad utterances skipped have no features; they
        # are listed with their error, so readers of the cache skip and count
        # them (or stop at them) as readers of the audio do.
        for position in sorted([*shard.features, *shard.bad_samples]):
            example = shard_examples[position]

            line = {
                "id": example["id"],
                "source": example["source"],
                "duration": example["duration"],
                "text": example["text"],
                "fields": json.loads(str(example["fields"])),
            }

            error = shard.bad_samples.get(position)
            if error is not None:
                index_lines.append({**line, "error": error, "frames": 0})

                continue

            features = shard.features[position]

            index_lines.append(
                {
                    **line,
                    "audio_path": example["audio_path"],
                    "audio_offset": example["offset"],
                    "shard": f"{name}.safetensors",
                    "offset": offset,
                    "frames": features.size(0),
                }
            )

            tensors.append(features)

            offset += features.size(0)

        header = self._cache.header

        stacked = torch.cat(tensors) if tensors else torch.empty((0, header.feature_dim), dtype=header.storage_dtype)

        metadata = {
            "fingerprint": header.fingerprint,
            "split": shard.split,
            "shard": str(shard.shard_idx),
            "rank": str(self._gangs.root.rank),
            "num_bad_samples": str(shard.num_bad_samples),
        }

        def write_features(tmp_file: Path) -> None:
            try:
                save_file({FEATURES_KEY: stacked.contiguous()}, str(tmp_file), metadata=metadata)
            except SafetensorError as ex:
                # Its I/O errors (a full disk) are not `OSError`s.
                raise OSError(str(ex)) from None

        def write_index(tmp_file: Path) -> None:
            tmp_file.write_text(
                "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in index_lines), encoding="utf-8"
            )

        # The index goes last: it marks the shard as finished.
        write_file_atomically(split_dir / f"{name}.safetensors", write_features)
        write_file_atomically(split_dir / f"{name}.jsonl", write_index)

        self._step_nr += 1

        log.info(
            "Split `{}`: wrote {} ({} utterances, {} frames{}).",
            shard.split,
            name,
            len(tensors),
            offset,
            f", {shard.num_bad_samples} bad skipped" if shard.num_bad_samples else "",
        )

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


def average_frames(features: Tensor, frame_average: int) -> Tensor:
    """Averages every ``frame_average`` consecutive frames of ``features``
    *Shape:* :math:`(S,M)`, dropping a trailing partial group, as the mapper does."""
    if frame_average == 1:
        return features

    num_frames = features.size(0) - features.size(0) % frame_average

    return features[:num_frames].reshape(num_frames // frame_average, frame_average, -1).mean(dim=1)
