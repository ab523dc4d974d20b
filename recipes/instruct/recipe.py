"""Stage 2 of SpeechMapper: attach a pretrained mapper to its frozen LLM and
tune the mapper briefly through the LLM on instructions (paper, "Stage 2")."""

from __future__ import annotations

from dataclasses import asdict
from typing import cast, final

from torch.nn import Module
from typing_extensions import override

from fairseq2.logging import log
from fairseq2.metrics.formatters import format_as_float, format_as_int
from fairseq2.metrics.recorders import MetricDescriptor
from fairseq2.recipe.base import Recipe, RecipeContext
from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.task import Task

from fairseq2_speechmapper.asset_store.mapper_card import MapperCard, default_mapper_card_name
from fairseq2_speechmapper.models.speechmapper import SpeechMapper
from fairseq2_speechmapper.recipe_support.data import SplitReaderFactory, open_dataset
from fairseq2_speechmapper.recipe_support.faults import NonFiniteStepGuard, reporting_model_load_errors, training_task
from fairseq2_speechmapper.recipe_support.speech_llm import load_recipe_speech_llm, replicate_added_parameters
from fairseq2_speechmapper.recipes.instruct.config import InstructConfig
from fairseq2_speechmapper.recipes.instruct.criterion import InstructLoss
from fairseq2_speechmapper.recipes.instruct.units import InstructEvalUnit, InstructUnit
from fairseq2_speechmapper.speech_llm import InstructionBuilder
from fairseq2_speechmapper.speech_llm.loader import add_llm_lora
from fairseq2_speechmapper.stage1 import create_stage1_loss, register_stage1_metric_descriptors


@final
class InstructRecipe(Recipe):
    @override
    def register(self, container: DependencyContainer) -> None:
        register_instruct_metric_descriptors(container)

    @override
    def create_task(self, context: RecipeContext) -> Task:
        config = context.get_config_as(InstructConfig)

        # The pretrained mapper's checkpoint: a damaged one is one line naming it.
        with reporting_model_load_errors():
            mapper = context.get_model_as(SpeechMapper)

        dataset = open_dataset(context, config.dataset)

        model, tokenizer, pretrained = load_recipe_speech_llm(
            context, str(config.model.name), config.speech_llm, dataset
        )

        # Applied by fairseq2 on top of the pretrained card's own overrides.
        model_config: dict[str, object] = {}

        if config.lora.enabled and mapper.llm_lora is None:
            lora_config = add_llm_lora(
                mapper, model.llm, rank=config.lora.rank, alpha=config.lora.alpha, dropout_p=config.lora.dropout_p
            )

            # The tuned mapper's card builds it with the adapters.
            model_config["llm_lora"] = asdict(lora_config)

            # mypy keeps `llm_lora` narrowed to None past `add_llm_lora`.
            replicate_added_parameters(cast(Module, mapper.llm_lora), context.gangs.dp)

            log.info(
                "LoRA adapters of rank {} on the LLM's query and value projections: {} parameters, trained with the mapper.",
                lora_config.rank,
                lora_config.num_layers
                * lora_config.rank
                * (2 * lora_config.model_dim + lora_config.q_dim + lora_config.v_dim),
            )

        # fairseq2 wrapped it for data parallelism when it loaded it.
        model.mapper = context.get_data_parallel_model()

        llm_name = config.speech_llm.llm or pretrained.llm

        pad_idx = pretrained.pad_idx(tokenizer, llm_name=llm_name)

        readers = SplitReaderFactory.for_training(context, dataset, config, model.speech_encoder, tokenizer)

        builder = InstructionBuilder(model, config.task)

        loss = InstructLoss(sigma=config.loss.sigma, stage1_loss=create_stage1_loss(config.loss.stage1))

        # Each rank draws its own ASR-mix batches.
        unit = InstructUnit(
            model,
            builder,
            loss,
            NonFiniteStepGuard.for_recipe(context, config.regime),
            task=config.task.task,
            asr_mix_prob=config.task.asr_mix_prob,
            pad_idx=pad_idx,
            seed=config.common.seed + context.gangs.dp.rank,
        )

        valid_units, valid_readers = [], []

        if config.dataset.valid_split is not None:
            valid_units.append(InstructEvalUnit(model, builder, loss, task=config.task.task, pad_idx=pad_idx))

            valid_readers.append(readers.create(config.dataset.valid_split, training=False))

        train_reader = readers.create(
            config.dataset.train_split, training=True, num_accumulate=config.trainer.grad_accumulation.num_batches
        )

        trainer = context.create_trainer(unit, train_reader, valid_units, valid_readers)

        extra_fields: dict[str, object] = {
            "stage": "instruct",
            "pretrained_mapper": pretrained.name,
            "task": config.task.task,
            "instruction": _first_instruction(config),
        }

        if config.speech_llm.chat_template is not None:
            extra_fields["chat_template"] = config.speech_llm.chat_template

        if config.speech_llm.system_prompt is not None:
            extra_fields["system_prompt"] = config.speech_llm.system_prompt

        card = MapperCard(
            name=config.mapper_card.name or default_mapper_card_name(context.output_dir),
            model_fields={"base": pretrained.name, **({"model_config": model_config} if model_config else {})},
            speech_encoder=pretrained.speech_encoder,
            speech_encoder_layer=model.speech_encoder.layer,
            speech_encoder_options=pretrained.speech_encoder_options,
            llm=llm_name,
            pad_token_id=pad_idx,
            extra_fields=extra_fields,
        )

        return training_task(context, trainer, card)

    @property
    @override
    def config_kls(self) -> type[object]:
        return InstructConfig


def _first_instruction(config: InstructConfig) -> str:
    task = config.task

    return {"asr": task.asr_prompts, "st": task.st_prompts, "sqa": task.sqa_prompts}[task.task][0]


def register_instruct_metric_descriptors(container: DependencyContainer) -> None:
    register_stage1_metric_descriptors(container)

    for descriptor in (
        MetricDescriptor("stage1_loss", "Stage-1 Loss", 90, format_as_float),
        MetricDescriptor("num_response_tokens", "Response Tokens", 802, format_as_int),
        MetricDescriptor("num_asr_batches", "ASR Batches", 803, format_as_int),
    ):
        container.collection.register_instance(MetricDescriptor, descriptor)
