"""Reads a feature cache with the speech reader's own bucketing, sharding and
resume, and hands its features to the mapper in place of the speech encoder's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import final

from safetensors import safe_open
from torch import Tensor

from fairseq2.assets import get_asset_store
from fairseq2.datasets import DataReader
from fairseq2.gang import Gangs
from fairseq2.logging import log
from fairseq2.nn import BatchLayout

from fairseq2_speechmapper.datasets import (
    SpeechBatch,
    SpeechDataReader,
    SpeechReadOptions,
    TextEncoder,
    count_left_out,
)
from fairseq2_speechmapper.datasets.audio import InputPreparer
from fairseq2_speechmapper.datasets.bad_samples import STOP_KEY
from fairseq2_speechmapper.features.cache import (
    FEATURES_KEY,
    FeatureCache,
    FeatureCacheError,
    card_checkpoint,
    checksum_problem,
    speech_encoder_setting,
)
from fairseq2_speechmapper.features.config import SpeechEncoderSection


@final
class FeatureLoader:
    """Adds an example's cached features (``inputs``, in the storage dtype)
    read from its memory-mapped shard, checked against their checksum: damaged
    features are an ``error`` that stops the run whatever ``on_bad_sample``."""

    def __init__(self, cache_dir: Path, *, check: bool = True) -> None:
        self._cache_dir = cache_dir
        self._check = check
        self._shards: dict[str, object] = {}
        self._lock = threading.Lock()

    def __call__(self, example: dict[str, object]) -> dict[str, object]:
        # Skipped as bad at extraction; the reader skips or raises it.
        if "error" in example:
            return example

        shard_file = str(example["shard"])

        offset, frames = int(example["offset"]), int(example["frames"])  # type: ignore[call-overload]

        inputs = self._open(shard_file).get_slice(FEATURES_KEY)[offset : offset + frames]  # type: ignore[attr-defined]

        problem = checksum_problem(example, inputs, self._cache_dir) if self._check else None
        if problem is not None:
            return {**example, "error": problem, STOP_KEY: True}

        example["inputs"] = inputs

        return example

    def _open(self, shard_file: str) -> object:
        # The data pipeline calls in parallel; each shard is opened (mapped) once.
        with self._lock:
            shard = self._shards.get(shard_file)
            if shard is None:
                shard = self._shards[shard_file] = safe_open(shard_file, framework="pt")

        return shard


@final
class FeatureCacheDataset:
    """The splits of a feature cache, read as :class:`SpeechBatch` es whose
    ``inputs`` are the features."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    @staticmethod
    def open(directory: Path) -> FeatureCacheDataset:
        return FeatureCacheDataset(FeatureCache.open(directory))

    @property
    def feature_cache(self) -> FeatureCache:
        return self.cache

    def describe_split(self, split: str, *, card_name: str | None) -> tuple[str, str]:
        """The cache's directory and split, and the manifest it was extracted from."""
        plan = self.cache.read_plan(split)

        return f"{self.cache.directory}:{split}", plan.manifest if plan is not None else ""

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
        """As :meth:`SpeechManifestDataset.create_reader`: the same utterances
        (manifest order, the same duration limits) give the same batches.

        :param prepare_input: ``None``: the features are read, no speech encoder runs.
        """
        if prepare_input is not None:
            raise TypeError("A feature cache is read for a model that runs the speech encoder.")

        cache_split = self.cache.read_split(split)

        plan = cache_split.plan

        examples = [e for e in cache_split.examples if options.accepts_duration(float(e["duration"]))]  # type: ignore[arg-type]

        left_out = count_left_out(split, [float(e["duration"]) for e in cache_split.examples], options)  # type: ignore[arg-type]

        log.info(
            "Split `{}`: {} utterances ({:.2f} h) from the feature cache {} ({}), {} of them bad and skipped at extraction; {} outside {}-{} s left out ({:.1%}).",
            split,
            len(examples),
            sum(float(e["duration"]) for e in examples) / 3600,  # type: ignore[arg-type, misc]
            self.cache.directory,
            self.cache.header.describe(),
            sum("error" in e for e in examples),
            left_out.num_left_out,
            options.min_duration,
            options.max_duration,
            left_out.share,
        )

        if options.min_duration < plan.min_duration or options.max_duration > plan.max_duration:
            log.warning(
                "Split `{}`: the cache holds only utterances of {}-{} s (the extraction's limits), the reader asks for {}-{} s.",
                split,
                plan.min_duration,
                plan.max_duration,
                options.min_duration,
                options.max_duration,
            )

        if not examples:
            raise FeatureCacheError(
                f"{cache_split.directory}: no cached utterance lasts between {options.min_duration} s and {options.max_duration} s (`dataset.min_duration`, `dataset.max_duration`)."
            )

        return SpeechDataReader(
            examples,
            split,
            gangs,
            options,
            load_example=FeatureLoader(self.cache.directory, check=options.check_features),
            encode_text=encode_text,
            training=training,
            seed=seed,
            num_accumulate=num_accumulate,
            left_out=left_out,
        )


@final
class CachedFeatureEncoder:
    """Stands in for the speech encoder when a batch's ``inputs`` are cached features.

    Features averaged over k frames at extraction are repeated k times: the
    mapper, which averages its own ``frame_average`` frames, then sees the
    averages it would have computed from the speech encoder's frames (k must divide it),
    so mapper and loss stay exactly as they are.
    """

    prepare_input: InputPreparer | None = None
    """No audio is read: the features are."""

    def __init__(self, *, layer: int, output_dim: int, frame_average: int) -> None:
        self.layer = layer
        self.output_dim = output_dim

        self._frame_average = frame_average

    def __call__(self, batch: SpeechBatch) -> tuple[Tensor, BatchLayout]:
        features, input_lens = batch.inputs, batch.input_lens

        if self._frame_average > 1:
            features = features.repeat_interleave(self._frame_average, dim=1)

            input_lens = [n * self._frame_average for n in input_lens]

        return features, BatchLayout.of(features, input_lens)


def check_frame_average(cache: FeatureCache, *, mapper_frame_average: int) -> None:
    frame_average = cache.header.frame_average

    if mapper_frame_average % frame_average != 0:
        raise FeatureCacheError(
            f"{cache.directory}: the features are averaged over {frame_average} frames, but the mapper averages {mapper_frame_average}, which is not a multiple of it; extract with `storage.frame_average=1` (or a divisor of {mapper_frame_average})."
        )


def open_cached_features(
    cache: FeatureCache,
    section: SpeechEncoderSection,
    *,
    mapper_frame_average: int,
    asked_by: str = "`speech_encoder`",
    setting: Callable[[str], str] = speech_encoder_setting,
) -> CachedFeatureEncoder:
    """Refuses a cache of other features than ``section`` (set by ``asked_by``)
    asks for: another speech encoder card or checkpoint, layer, option or compute dtype."""
    card = get_asset_store().retrieve_card(section.name)

    problems = cache.header.mismatches(section, checkpoint=card_checkpoint(card), setting=setting)
    if problems:
        raise FeatureCacheError(
            f"{cache.directory}: the feature cache does not hold the features {asked_by} asks for: {'; '.join(problems)}. Extract them with `extract-features` into another directory, or point `dataset.feature_cache` at a cache of these."
        )

    check_frame_average(cache, mapper_frame_average=mapper_frame_average)

    log.info(
        "Reading the speech encoder features from the cache {} ({}); the speech encoder is not loaded.",
        cache.directory,
        cache.header.describe(),
    )

    header = cache.header

    return CachedFeatureEncoder(layer=header.layer, output_dim=header.feature_dim, frame_average=header.frame_average)
