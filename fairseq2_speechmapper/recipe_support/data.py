"""Opening a recipe's speech data: the manifests, or the feature cache in
their place, and a split reader that feeds the speech encoder or reads its features."""

from __future__ import annotations

from typing import Protocol, final

from fairseq2.data.tokenizers import Tokenizer
from fairseq2.datasets import DataReader
from fairseq2.gang import Gangs
from fairseq2.recipe.base import RecipeContext

from fairseq2_speechmapper.datasets import (
    SpeechBatch,
    SpeechDataReader,
    SpeechManifestDataset,
    SpeechManifestDatasetConfig,
    SpeechReadOptions,
    TextEncoder,
)
from fairseq2_speechmapper.datasets.audio import InputPreparer
from fairseq2_speechmapper.features import FeatureCache, FeatureCacheDataset, SpeechEncoderFeatures
from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection, SpeechTrainingConfig


class SpeechDataset(Protocol):
    """What a recipe reads speech batches from: audio manifests
    (:class:`SpeechManifestDataset`) or a feature cache
    (:class:`FeatureCacheDataset`)."""

    @property
    def feature_cache(self) -> FeatureCache | None:
        """The cache the features are read from; ``None`` for audio."""

    def describe_split(self, split: str, *, card_name: str | None) -> tuple[str, str]:
        """The test set ``split`` names in results, and the manifest it comes
        from; ``card_name``: the dataset card whose manifests are read."""

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
        """A reader of ``split``; ``prepare_input`` is the speech encoder frontend's when
        audio is read for a model that runs the speech encoder, ``None`` when it reads
        cached features."""


def open_dataset(context: RecipeContext, section: SpeechDatasetSection) -> SpeechDataset:
    """The feature cache if the section names one, else the manifests."""
    if section.feature_cache is not None:
        return FeatureCacheDataset.open(section.feature_cache)

    return open_speech_dataset(context, section)


def feature_cache_of(dataset: SpeechDataset) -> FeatureCache | None:
    return dataset.feature_cache


def describe_split(dataset: SpeechDataset, section: SpeechDatasetSection, split: str) -> tuple[str, str]:
    """The test set a split names in results, and the manifest it comes from.

    The name is the dataset card and split only when the card's manifests are
    read; manifests given in the section (which win over the card) are named
    by their path, and a feature cache by its directory and split.
    """
    from_card = section.name is not None and section.manifest_dir is None and not section.manifests

    return dataset.describe_split(split, card_name=section.name if from_card else None)


def open_speech_dataset(context: RecipeContext, section: SpeechDatasetSection) -> SpeechManifestDataset:
    """The manifests (never the feature cache); manifests given in the section
    win over the dataset card."""
    if section.manifest_dir is not None or section.manifests:
        return SpeechManifestDataset.from_config(
            SpeechManifestDatasetConfig(manifest_dir=section.manifest_dir, manifests=dict(section.manifests))
        )

    return context.get_dataset_as(SpeechManifestDataset)


def create_split_reader(
    dataset: SpeechDataset,
    split: str,
    section: SpeechDatasetSection,
    features: SpeechEncoderFeatures,
    tokenizer: Tokenizer,
    gangs: Gangs,
    *,
    training: bool,
    seed: int,
    num_accumulate: int = 1,
) -> DataReader[SpeechBatch]:
    """Reads ``split`` as ``features`` needs it: audio through the speech encoder's
    frontend, or cached features; the transcripts as the LLM's token ids."""
    return dataset.create_reader(
        split,
        gangs,
        section,
        prepare_input=features.prepare_input,
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
        dataset: SpeechDataset,
        section: SpeechDatasetSection,
        features: SpeechEncoderFeatures,
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
        dataset: SpeechDataset,
        config: SpeechTrainingConfig,
        features: SpeechEncoderFeatures,
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
