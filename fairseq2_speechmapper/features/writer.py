"""Writes the feature cache that :mod:`~fairseq2_speechmapper.features.cache`
reads: the header, each split's plan, and each shard whole or not at all,
with the checksums that find a damaged one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import final

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import Tensor

from fairseq2.logging import log

from fairseq2_speechmapper.datasets import SpeechReadOptions, make_length_batches
from fairseq2_speechmapper.features.cache import (
    FEATURES_KEY,
    HEADER_FILE,
    INDEX_CHECKSUM_KEY,
    PLAN_FILE,
    FeatureCache,
    FeatureCacheError,
    SplitPlan,
    feature_checksum,
    hash_examples,
    shard_name,
    text_checksum,
)
from fairseq2_speechmapper.files import write_file_atomically, write_json_atomically


def average_frames(features: Tensor, frame_average: int) -> Tensor:
    """Averages every ``frame_average`` consecutive frames of ``features``
    *Shape:* :math:`(S,M)`, dropping a trailing partial group, as the mapper does."""
    if frame_average == 1:
        return features

    num_frames = features.size(0) - features.size(0) % frame_average

    return features[:num_frames].reshape(num_frames // frame_average, frame_average, -1).mean(dim=1)


@final
@dataclass(kw_only=True)
class PendingShard:
    """A shard being extracted: its utterances' features as they come."""

    split: str

    shard_idx: int

    examples: list[dict[str, object]]
    """The shard's manifest examples, in manifest order."""

    features: dict[int, Tensor] = field(default_factory=dict)
    """The stored features by position in the shard."""

    bad_samples: dict[int, str] = field(default_factory=dict)
    """Why each skipped bad utterance is bad, by position in the shard."""

    def skip_bad_sample(self, example: dict[str, object]) -> None:
        """Skips a bad utterance (its ``error`` says why), listed as such in the index."""
        log.warning("Skipping bad utterance. {}", example["error"])

        self.bad_samples[int(example["position"])] = str(example["error"])  # type: ignore[call-overload]

    @property
    def audio_seconds(self) -> float:
        return sum(float(e["duration"]) for e in self.examples)  # type: ignore[arg-type, misc]

    @property
    def is_complete(self) -> bool:
        return len(self.features) + len(self.bad_samples) == len(self.examples)


def pending_shards(
    plan: SplitPlan, examples: list[dict[str, object]], shards: list[int], options: SpeechReadOptions
) -> tuple[dict[int, PendingShard], list[list[dict[str, object]]]]:
    """``shards`` of a split to extract, and their utterances in length
    batches; each example says its shard (``shard_idx``) and ``position``."""
    pending, batches = {}, []

    for shard_idx in shards:
        shard_examples = examples[shard_idx * plan.shard_size : (shard_idx + 1) * plan.shard_size]

        pending[shard_idx] = PendingShard(split=plan.split, shard_idx=shard_idx, examples=shard_examples)

        positioned = [{**e, "shard_idx": shard_idx, "position": pos} for pos, e in enumerate(shard_examples)]

        # Length-bucketed within the shard, so a shard is done at once.
        batches.extend(make_length_batches(positioned, options))

    return pending, batches


@final
class FeatureCacheWriter:
    """Writes into a feature cache directory, in shards of ``shard_size``
    utterances, on rank ``rank``; refuses a directory of other features or a
    split planned otherwise."""

    def __init__(self, cache: FeatureCache, *, rank: int, shard_size: int) -> None:
        self.cache = cache
        self._rank = rank
        self._shard_size = shard_size

    def write_or_check_header(self) -> None:
        """Rank 0 writes the header; every rank checks one already there."""
        header, header_file = self.cache.header, self.cache.directory / HEADER_FILE

        if header_file.is_file():
            existing = FeatureCache.open(self.cache.directory).header

            if existing != header:
                raise FeatureCacheError(
                    f"{self.cache.directory}: the directory holds features of {existing.describe()}, not of {header.describe()}; features of another speech encoder, layer, option or dtype are never mixed into a cache: extract into another directory."
                )
        elif self._rank == 0:
            write_json_atomically(header_file, header.to_json())

    def plan_split(
        self, split: str, examples: list[dict[str, object]], *, manifest: Path, section: SpeechReadOptions
    ) -> SplitPlan:
        """Cuts ``examples`` (read from ``manifest`` within ``section``'s
        duration limits) into shards; rank 0 writes the plan, every rank
        checks one already there."""
        plan = SplitPlan(
            split=split,
            manifest=str(manifest),
            records_sha256=hash_examples(examples),
            num_utterances=len(examples),
            audio_seconds=sum(float(e["duration"]) for e in examples),  # type: ignore[arg-type, misc]
            min_duration=section.min_duration,
            max_duration=section.max_duration,
            shard_size=self._shard_size,
        )

        existing = self.cache.read_plan(plan.split)

        split_dir = self.cache.split_dir(plan.split)

        if existing is None:
            if self._rank == 0:
                split_dir.mkdir(parents=True, exist_ok=True)

                write_json_atomically(split_dir / PLAN_FILE, plan.to_json())
        elif existing != plan:
            raise FeatureCacheError(
                f"{split_dir}: the `{plan.split}` split was started from other utterances or another shard size ({existing.num_utterances} utterances of {existing.manifest} in shards of {existing.shard_size}); its manifest, `dataset.min_duration`/`max_duration` or `storage.shard_size` changed: extract into another directory, or delete {split_dir} to start the split over."
            )

        return plan

    def remove_damaged_shards(self, split: str, shards: range) -> set[int]:
        """The finished ones of ``shards``, after removing (so that they are
        extracted again) those damaged: truncated, garbled, or whose bytes no
        longer match their checksums (a crash of the machine, a bad copy)."""
        finished = self.cache.finished_shards(split) & set(shards)

        for shard_idx in sorted(finished):
            problem = self.cache.shard_problem(split, shard_idx, verify=True)

            if problem is not None:
                log.warning("Split `{}`: extracting {} again. {}", split, shard_name(shard_idx), problem)

                self.cache.remove_shard(split, shard_idx)

                finished.discard(shard_idx)

        return finished

    def add_features(self, shard: PendingShard, position: int, features: Tensor, source: object) -> None:
        """Stores an utterance's speech encoder features *Shape:* :math:`(S,M)` as the
        cache's header says: averaged, in the storage dtype, on the CPU."""
        header = self.cache.header

        utterance = average_frames(features.float(), header.frame_average).to(header.storage_dtype)

        if not torch.isfinite(utterance).all():
            raise FeatureCacheError(
                f"{source}: the features overflow {header.dtype}; extract with `storage.dtype=bfloat16` or `float32`."
            )

        shard.features[position] = utterance.cpu()

    def write_shard(self, shard: PendingShard) -> None:
        """Writes a complete shard: the features, then its index (which marks
        it finished); the features file carries the index's checksum, and the
        index each utterance's."""
        name = shard_name(shard.shard_idx)

        index_lines, tensors, offset = [], [], 0

        # Manifest order. The bad utterances skipped have no features; they
        # are listed with their error, so readers of the cache skip and count
        # them (or stop at them) as readers of the audio do.
        for position in sorted([*shard.features, *shard.bad_samples]):
            example = shard.examples[position]

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
                    "crc32": feature_checksum(features),
                }
            )

            tensors.append(features)

            offset += features.size(0)

        header = self.cache.header

        stacked = torch.cat(tensors) if tensors else torch.empty((0, header.feature_dim), dtype=header.storage_dtype)

        index = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in index_lines)

        metadata = {
            "fingerprint": header.fingerprint,
            "split": shard.split,
            "shard": str(shard.shard_idx),
            "rank": str(self._rank),
            "num_bad_samples": str(len(shard.bad_samples)),
            INDEX_CHECKSUM_KEY: text_checksum(index),
        }

        def write_features(tmp_file: Path) -> None:
            try:
                save_file({FEATURES_KEY: stacked.contiguous()}, str(tmp_file), metadata=metadata)
            except SafetensorError as ex:
                # Its I/O errors (a full disk) are not `OSError`s.
                raise OSError(str(ex)) from None

        def write_index(tmp_file: Path) -> None:
            tmp_file.write_text(index, encoding="utf-8")

        split_dir = self.cache.split_dir(shard.split)

        # The index goes last: it marks the shard as finished.
        write_file_atomically(split_dir / f"{name}.safetensors", write_features)
        write_file_atomically(split_dir / f"{name}.jsonl", write_index)

        log.info(
            "Split `{}`: wrote {} ({} utterances, {} frames{}).",
            shard.split,
            name,
            len(tensors),
            offset,
            f", {len(shard.bad_samples)} bad skipped" if shard.bad_samples else "",
        )
