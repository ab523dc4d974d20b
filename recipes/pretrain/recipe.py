"""Stage 1 of SpeechMapper: pretrain the mapper to output the LLM's input
embeddings of the transcript, without the LLM (paper, "Stage 1")."""

from __future__ import annotations

from typing import final

from typing_extensions import override

from fairseq2.recipe.base import Recipe, RecipeContext
from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.task import Task

from fairseq2_speechmapper.asset_store.mapper_card import MapperCard, default_mapper_card_name
from fairseq2_speechmapper.models.speechmapper import SpeechMapper
from fairseq2_speechmapper.recipe_support.data import SplitReaderFactory, feature_cache_of, open_dataset
from fairseq2_speechmapper.recipe_support.faults import (
    NonFiniteStepGuard,
    reporting_model_load_errors,
    training_task,
)
from fairseq2_speechmapper.recipes.pretrain.config import PretrainConfig
from fairseq2_speechmapper.recipes.pretrain.units import create_pretrain_unit
from fairseq2_speechmapper.stage1 import (
    Stage1EvalUnit,
    create_decoding_scorer,
    create_stage1_loss,
    load_stage1_model,
    register_stage1_metric_descriptors,
)


@final
class PretrainRecipe(Recipe):
    @override
    def register(self, container: DependencyContainer) -> None:
        register_stage1_metric_descriptors(container)

    @override
    def create_task(self, context: RecipeContext) -> Task:
        config = context.get_config_as(PretrainConfig)

        gangs = context.gangs

        dataset = open_dataset(context, config.dataset)

        # The mapper (a base card, when given), speech encoder and embedding-table checkpoints.
        with reporting_model_load_errors():
            mapper = context.get_model_as(SpeechMapper)

            model, targets, tokenizer = load_stage1_model(
                config.speech_encoder,
                config.llm,
                mapper=context.get_data_parallel_model(),
                unwrapped_mapper=mapper,
                device=gangs.root.device,
                feature_cache=feature_cache_of(dataset),
                cache_in_memory=config.speech_encoder.cache_features_in_memory,
            )

        readers = SplitReaderFactory.for_training(context, dataset, config, model.speech_encoder, tokenizer)

        loss = create_stage1_loss(config.loss)

        unit = create_pretrain_unit(
            model,
            targets,
            loss,
            NonFiniteStepGuard.for_recipe(context, config.regime),
            config.loss,
            mapper,
            arch=config.model.arch,
        )

        train_reader = readers.create(
            config.dataset.train_split, training=True, num_accumulate=config.trainer.grad_accumulation.num_batches
        )

        valid_units, valid_readers = [], []

        if config.dataset.valid_split is not None:
            scorer = create_decoding_scorer(targets.embedding_table, tokenizer, targets.pad_idx)

            valid_units.append(Stage1EvalUnit(model, targets, loss, scorer))

            valid_readers.append(readers.create(config.dataset.valid_split, training=False))

        trainer = context.create_trainer(unit, train_reader, valid_units, valid_readers)

        card = MapperCard(
            name=config.mapper_card.name or default_mapper_card_name(context.output_dir),
            model_fields=_mapper_model_fields(config),
            speech_encoder=config.speech_encoder.name,
            speech_encoder_layer=model.speech_encoder.layer,
            speech_encoder_options={"whisper_window": config.speech_encoder.whisper_window},
            llm=config.llm.name,
            pad_token_id=targets.pad_idx,
        )

        return training_task(context, trainer, card)

    @property
    @override
    def config_kls(self) -> type[object]:
        return PretrainConfig


def _mapper_model_fields(config: PretrainConfig) -> dict[str, object]:
    if config.model.name is not None:
        return {"base": config.model.name}

    fields: dict[str, object] = {"model_arch": config.model.arch}

    if config.model.config_overrides:
        fields["model_config"] = config.model.config_overrides

    return fields
