"""Opening a recipe's speech data: the manifests, or the feature cache in
their place, and a split reader that feeds the SFM or reads its features."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import final

from fairseq2.data.tokenizers import Tokenizer
from fairseq2.datasets import DataReader
from fairseq2.gang import Gangs
from fairseq2.recipe.base import RecipeContext

from fairseq2_speechmapper.datasets import (
    SpeechBatch,
    SpeechDataReader,
    SpeechManifestDataset,
    SpeechManifestDatasetConfig,
)
from fairseq2_speechmapper.features import (
    CachedFeatureEncoder,
    FeatureCache,
    FeatureCacheDataset,
    SFMFeatures,
    SpeechFeatureEncoder,
)
from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection, SpeechTrainingConfig


def open_dataset(context: RecipeContext, section: SpeechDatasetSection) -> SpeechManifestDataset | FeatureCacheDataset:
    """The feature cache if the section names one, else the manifests."""
    if section.feature_cache is not None:
        return FeatureCacheDataset.open(section.feature_cache)

    return open_speech_dataset(context, section)


def feature_cache_of(dataset: SpeechManifestDataset | FeatureCacheDataset) -> FeatureCache | None:
    return dataset.cache if isinstance(dataset, FeatureCacheDataset) else None


def describe_split(
    dataset: SpeechManifestDataset | FeatureCacheDataset, section: SpeechDatasetSection, split: str
) -> tuple[str, str]:
    """The test set a split names in results, and the manifest it comes from.

    The name is the dataset card and split only when the card's manifests are
    read; manifests given in the section (which win over the card) are named
    by their path, and a feature cache by its directory and split.
    """
    if isinstance(dataset, FeatureCacheDataset):
        plan = dataset.cache.read_plan(split)

        return f"{dataset.cache.directory}:{split}", plan.manifest if plan is not None else ""

    manifest = str(dataset.manifest_path(split))

    if section.name is not None and section.manifest_dir is None and not section.manifests:
        return f"{section.name}:{split}", manifest

    return manifest, manifest


def open_speech_dataset(context: RecipeContext, section: SpeechDatasetSection) -> SpeechManifestDataset:
    """The manifests (never the feature cache); manifests given in the section
    win over the dataset card."""
    if section.manifest_dir is not None or section.manifests:
        return SpeechManifestDataset.from_config(
            SpeechManifestDatasetConfig(manifest_dir=section.manifest_dir, manifests=dict(section.manifests))
        )

    return context.get_dataset_as(SpeechManifestDataset)


def create_split_reader(
    dataset: SpeechManifestDataset | FeatureCacheDataset,
    split: str,
    section: SpeechDatasetSection,
    features: SFMFeatures,
    tokenizer: Tokenizer,
    gangs: Gangs,
    *,
    training: bool,
    seed: int,
    num_accumulate: int = 1,
) -> DataReader[SpeechBatch]:
    """Reads ``split`` as ``features`` needs it: audio through the SFM's
    frontend, or cached features; the transcripts as the LLM's token ids."""
    create_reader: Callable[..., DataReader[SpeechBatch]]

    if isinstance(dataset, FeatureCacheDataset):
        if not isinstance(features, CachedFeatureEncoder):
            raise TypeError("A feature cache is read for a model that runs the SFM.")

        create_reader = dataset.create_reader
    else:
        if not isinstance(features, SpeechFeatureEncoder):
            raise TypeError("Audio manifests are read for a model that runs no SFM.")

        create_reader = partial(dataset.create_reader, prepare_input=features.speech_encoder.prepare_input)

    return create_reader(
        split,
        gangs,
        section,
        encode_text=tokenizer.create_raw_encoder(),
        training=training,
        seed=seed,
        num_accumulate=num_accumulate,
    )


@final
class SplitReaderFactory:
    """Creates a recipe's split readers from what they share: the dataset, its
    section, the features the model reads, the tokenizer, the gangs and the
    seed."""

    def __init__(
        self,
        context: RecipeContext,
        dataset: SpeechManifestDataset | FeatureCacheDataset,
        section: SpeechDatasetSection,
        features: SFMFeatures,
        tokenizer: Tokenizer,
        *,
        seed: int,
    ) -> None:
        self._dataset = dataset
        self._section = section
        self._features = features
        self._tokenizer = tokenizer
        self._gangs = context.gangs
        self._metric_recorder = context.metric_recorder
        self._seed = seed

    @classmethod
    def for_training(
        cls,
        context: RecipeContext,
        dataset: SpeechManifestDataset | FeatureCacheDataset,
        config: SpeechTrainingConfig,
        features: SFMFeatures,
        tokenizer: Tokenizer,
    ) -> SplitReaderFactory:
        """A training recipe's factory: ``config``'s dataset section and seed."""
        return cls(context, dataset, config.dataset, features, tokenizer, seed=config.common.seed)

    def create(self, split: str, *, training: bool, num_accumulate: int = 1) -> DataReader[SpeechBatch]:
        """The reader of ``split``; what its duration limits left out is
        recorded in ``metrics/data.jsonl``."""
        reader = create_split_reader(
            self._dataset,
            split,
            self._section,
            self._features,
            self._tokenizer,
            self._gangs,
            training=training,
            seed=self._seed,
            num_accumulate=num_accumulate,
        )

        if isinstance(reader, SpeechDataReader) and reader.left_out is not None and self._gangs.root.rank == 0:
            self._metric_recorder.record_metric_values("data", reader.left_out.metric_values())

        return reader
