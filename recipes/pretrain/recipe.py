"""Stage 1 of SpeechMapper: pretrain the mapper to output the LLM's input
embeddings of the transcript, without the LLM (paper, "Stage 1")."""

from __future__ import annotations

from typing import final

import torch
from typing_extensions import override

from fairseq2.data.tokenizers import Tokenizer, load_tokenizer
from fairseq2.datasets import DataReader
from fairseq2.gang import Gangs
from fairseq2.logging import log
from fairseq2.metrics.formatters import format_as_float, format_as_int
from fairseq2.metrics.recorders import MetricDescriptor
from fairseq2.recipe.base import Recipe, RecipeContext
from fairseq2.recipe.cli import register_cli_error
from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.trainer import Trainer

from fairseq2_speechmapper.datasets import (
    BadSampleError,
    ManifestError,
    SpeechBatch,
    SpeechManifestDataset,
    SpeechManifestDatasetConfig,
)
from fairseq2_speechmapper.embedding_table import EmbeddingTableError, load_embedding_table
from fairseq2_speechmapper.features import (
    CachedFeatureEncoder,
    FeatureCache,
    FeatureCacheDataset,
    FeatureCacheError,
)
from fairseq2_speechmapper.models.speechmapper import SpeechMapper
from fairseq2_speechmapper.recipes.pretrain.config import (
    PretrainConfig,
    SpeechDatasetSection,
    SpeechEncoderSection,
    TargetLLMSection,
)
from fairseq2_speechmapper.recipes.pretrain.criterion import create_stage1_loss
from fairseq2_speechmapper.recipes.pretrain.mapper_card import MapperCardError, MapperCardWriter, default_mapper_card_name
from fairseq2_speechmapper.recipes.pretrain.metrics import EmbeddingDecodingScorer, NearestEmbeddingDecoder
from fairseq2_speechmapper.recipes.pretrain.stage1 import (
    PadTokenError,
    SpeechFeatureEncoder,
    SFMFeatures,
    Stage1Model,
    decode_token,
    load_sfm_features,
    resolve_pad_idx,
)
from fairseq2_speechmapper.recipes.pretrain.units import PretrainUnit, Stage1EvalUnit
from fairseq2_speechmapper.speech_encoders import SpeechEncoderNotSupportedError


class Stage1SetupError(Exception):
    """The mapper, the SFM and the LLM do not fit together."""


@final
class PretrainRecipe(Recipe):
    @override
    def register(self, container: DependencyContainer) -> None:
        register_stage1_errors(container)

        register_stage1_metric_descriptors(container)

    @override
    def create_task(self, context: RecipeContext) -> Trainer:
        config = context.get_config_as(PretrainConfig)

        gangs = context.gangs

        mapper = context.get_model_as(SpeechMapper)

        dataset = open_dataset(context, config.dataset)

        model, tokenizer = load_stage1_model(
            config.speech_encoder,
            config.llm,
            mapper=context.get_data_parallel_model(),
            unwrapped_mapper=mapper,
            device=gangs.root.device,
            feature_cache=feature_cache_of(dataset),
        )

        def create_reader(split: str, *, training: bool) -> DataReader[SpeechBatch]:
            return create_split_reader(
                dataset,
                split,
                config.dataset,
                model.speech_encoder,
                tokenizer,
                gangs,
                training=training,
                seed=config.common.seed,
                num_accumulate=config.trainer.grad_accumulation.num_batches if training else 1,
            )

        loss = create_stage1_loss(config.loss)

        unit = PretrainUnit(model, loss)

        train_reader = create_reader(config.dataset.train_split, training=True)

        valid_units, valid_readers = [], []

        if config.dataset.valid_split is not None:
            valid_units.append(Stage1EvalUnit(model, loss, create_decoding_scorer(model, tokenizer)))

            valid_readers.append(create_reader(config.dataset.valid_split, training=False))

        trainer = context.create_trainer(unit, train_reader, valid_units, valid_readers)

        if gangs.root.rank == 0:
            card_writer = MapperCardWriter(
                name=config.mapper_card.name or default_mapper_card_name(context.output_dir),
                checkpoint_dir=context.output_dir / "checkpoints",
                model_fields=_mapper_model_fields(config),
                speech_encoder=config.speech_encoder.name,
                speech_encoder_layer=model.speech_encoder.layer,
                speech_encoder_options={"whisper_window": config.speech_encoder.whisper_window},
                llm=config.llm.name,
                pad_token=decode_token(tokenizer, model.pad_idx),
                pad_token_id=model.pad_idx,
            )

            trainer.register_checkpoint_save_hook(card_writer)

        return trainer

    @property
    @override
    def config_kls(self) -> type[object]:
        return PretrainConfig


def load_stage1_model(
    speech_encoder_section: SpeechEncoderSection,
    llm_section: TargetLLMSection,
    *,
    mapper: torch.nn.Module,
    unwrapped_mapper: SpeechMapper,
    device: torch.device,
    feature_cache: FeatureCache | None = None,
) -> tuple[Stage1Model, Tokenizer]:
    """Loads the frozen SFM, the LLM's tokenizer and embedding table, and
    checks that the mapper fits both (``unwrapped_mapper``: the mapper without
    its DDP/FSDP wrapper). With ``feature_cache`` the SFM is not loaded: the
    cache must hold the features ``speech_encoder_section`` asks for."""
    features = load_sfm_features(
        speech_encoder_section,
        device=device,
        cache_in_memory=speech_encoder_section.cache_features_in_memory,
        feature_cache=feature_cache,
        mapper_frame_average=unwrapped_mapper.frame_average,
    )

    tokenizer = load_tokenizer(llm_section.name)

    embedding_table = load_embedding_table(llm_section.name, device=device, dtype=torch.float32)

    pad_idx = resolve_pad_idx(tokenizer, llm_section.pad_token, llm_name=llm_section.name)

    check_mapper_fits(
        unwrapped_mapper,
        speech_encoder_dim=features.output_dim,
        llm_dim=embedding_table.size(1),
        speech_encoder_name=speech_encoder_section.name,
        llm_name=llm_section.name,
    )

    log.info(
        "Targets: the `{}` embedding table ({} x {}), pad token {!r} (id {}); the LLM itself is not loaded.",
        llm_section.name,
        embedding_table.size(0),
        embedding_table.size(1),
        decode_token(tokenizer, pad_idx),
        pad_idx,
    )

    return Stage1Model(features, mapper, embedding_table, pad_idx), tokenizer


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
    if isinstance(dataset, FeatureCacheDataset):
        if not isinstance(features, CachedFeatureEncoder):
            raise TypeError("A feature cache is read for a model that runs the SFM.")

        return dataset.create_reader(
            split,
            gangs,
            section,
            encode_text=tokenizer.create_raw_encoder(),
            training=training,
            seed=seed,
            num_accumulate=num_accumulate,
        )

    if not isinstance(features, SpeechFeatureEncoder):
        raise TypeError("Audio manifests are read for a model that runs no SFM.")

    return dataset.create_reader(
        split,
        gangs,
        section,
        prepare_input=features.speech_encoder.prepare_input,
        encode_text=tokenizer.create_raw_encoder(),
        training=training,
        seed=seed,
        num_accumulate=num_accumulate,
    )


def create_decoding_scorer(model: Stage1Model, tokenizer: Tokenizer) -> EmbeddingDecodingScorer:
    return EmbeddingDecodingScorer(
        NearestEmbeddingDecoder(model.embedding_table),
        tokenizer.create_decoder(skip_special_tokens=True),
        model.pad_idx,
    )


def check_mapper_fits(
    mapper: SpeechMapper, *, speech_encoder_dim: int, llm_dim: int, speech_encoder_name: str, llm_name: str
) -> None:
    if mapper.input_dim != speech_encoder_dim:
        raise Stage1SetupError(
            f"The mapper reads {mapper.input_dim}-dimensional features, but `{speech_encoder_name}` outputs {speech_encoder_dim}; set `model.config_overrides.input_dim={speech_encoder_dim}`."
        )

    if mapper.llm_dim != llm_dim:
        raise Stage1SetupError(
            f"The mapper outputs {mapper.llm_dim}-dimensional vectors, but `{llm_name}` embeds into {llm_dim}; set `model.config_overrides.llm_dim={llm_dim}`."
        )


def open_dataset(
    context: RecipeContext, section: SpeechDatasetSection
) -> SpeechManifestDataset | FeatureCacheDataset:
    """The feature cache if the section names one, else the manifests."""
    if section.feature_cache is not None:
        return FeatureCacheDataset.open(section.feature_cache)

    return open_speech_dataset(context, section)


def feature_cache_of(dataset: SpeechManifestDataset | FeatureCacheDataset) -> FeatureCache | None:
    return dataset.cache if isinstance(dataset, FeatureCacheDataset) else None


def open_speech_dataset(context: RecipeContext, section: SpeechDatasetSection) -> SpeechManifestDataset:
    """The manifests (never the feature cache); manifests given in the section
    win over the dataset card."""
    if section.manifest_dir is not None or section.manifests:
        return SpeechManifestDataset.from_config(
            SpeechManifestDatasetConfig(manifest_dir=section.manifest_dir, manifests=dict(section.manifests))
        )

    return context.get_dataset_as(SpeechManifestDataset)


def _mapper_model_fields(config: PretrainConfig) -> dict[str, object]:
    if config.model.name is not None:
        return {"base": config.model.name}

    fields: dict[str, object] = {"model_arch": config.model.arch}

    if config.model.config_overrides:
        fields["model_config"] = config.model.config_overrides

    return fields


def register_stage1_errors(container: DependencyContainer) -> None:
    register_user_errors(
        container,
        BadSampleError,
        ManifestError,
        EmbeddingTableError,
        FeatureCacheError,
        MapperCardError,
        PadTokenError,
        SpeechEncoderNotSupportedError,
        Stage1SetupError,
    )


def register_user_errors(container: DependencyContainer, *kls: type[Exception]) -> None:
    """Errors of these types end the run with their one-line message and exit
    code 2 (they are the user's to fix, a traceback would only hide them)."""

    def log_error(ex: Exception) -> int:
        log.error("{}", ex)

        return 2

    for error_kls in kls:
        register_cli_error(container, error_kls, log_error)


def register_stage1_metric_descriptors(container: DependencyContainer) -> None:
    for descriptor in (
        MetricDescriptor("word_distance", "Word Distance", 91, format_as_float),
        MetricDescriptor("pad_distance", "Pad Distance", 92, format_as_float),
        MetricDescriptor("cosine", "Cosine", 93, format_as_float, higher_better=True),
        MetricDescriptor("norm_ratio", "Output/Target Norm", 94, format_as_float),
        MetricDescriptor("ter", "Token Error Rate", 95, format_as_float),
        MetricDescriptor("word_token_accuracy", "Word Token Accuracy", 96, format_as_float, higher_better=True),
        MetricDescriptor("pad_accuracy", "Pad Accuracy", 97, format_as_float, higher_better=True),
        MetricDescriptor("num_skipped_too_long", "Skipped (Transcript Too Long)", 800, format_as_int),
        MetricDescriptor("num_bad_samples", "Skipped (Bad Audio)", 801, format_as_int),
    ):
        container.collection.register_instance(MetricDescriptor, descriptor)
