"""``fairseq2 speechmapper evaluate --stage1``: scores a pretrained mapper
(by card name) on any manifest with the stage-1 loss and embedding-space
decoding, and writes each utterance's decoded text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO, final

from typing_extensions import override

from fairseq2.evaluator import Evaluator
from fairseq2.recipe.base import Recipe, RecipeContext
from fairseq2.runtime.dependency import DependencyContainer

from fairseq2_speechmapper.asset_store.mapper_card import MapperCard
from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.models.speechmapper import SpeechMapper
from fairseq2_speechmapper.recipe_support.data import SplitReaderFactory, open_speech_dataset
from fairseq2_speechmapper.recipe_support.faults import reporting_model_load_errors
from fairseq2_speechmapper.recipes.evaluate_stage1.config import Stage1EvalConfig
from fairseq2_speechmapper.stage1 import (
    Stage1EvalUnit,
    TargetLLMSection,
    create_decoding_scorer,
    create_stage1_loss,
    load_stage1_model,
    register_stage1_metric_descriptors,
)


@final
class Stage1EvalRecipe(Recipe):
    @override
    def register(self, container: DependencyContainer) -> None:
        register_stage1_metric_descriptors(container)

    @override
    def create_task(self, context: RecipeContext) -> Evaluator:
        config = context.get_config_as(Stage1EvalConfig)

        card = MapperCard.read(context.asset_store.retrieve_card(str(config.model.name)))

        gangs = context.gangs

        # The mapper, speech encoder and embedding-table checkpoints.
        with reporting_model_load_errors():
            mapper = context.get_model_as(SpeechMapper)

            model, targets, tokenizer = load_stage1_model(
                card.speech_encoder_section(),
                TargetLLMSection(name=card.llm),
                mapper=mapper,
                unwrapped_mapper=mapper,
                device=gangs.root.device,
                pad_idx=card.pad_token_id,
            )

        dataset = open_speech_dataset(context, config.dataset)

        readers = SplitReaderFactory(
            context, dataset, config.dataset, model.speech_encoder, tokenizer, seed=config.common.seed
        )

        reader = readers.create(str(config.dataset.valid_split), training=False)

        hypothesis_file = context.output_dir / "hypotheses" / f"stage1.rank_{gangs.root.rank}.jsonl"

        unit = Stage1EvalUnit(
            model,
            targets,
            create_stage1_loss(config.loss),
            create_decoding_scorer(targets.embedding_table, tokenizer, targets.pad_idx),
            hypothesis_sink=HypothesisWriter(hypothesis_file),
        )

        return context.create_evaluator([unit], [reader])

    @property
    @override
    def config_kls(self) -> type[object]:
        return Stage1EvalConfig


@final
class HypothesisWriter:
    """Writes one JSON line per utterance: id, reference, hypothesis."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)

        self._path = path
        self._fp: TextIO = path.open("w", encoding="utf-8")

    def __call__(self, batch: SpeechBatch, hypotheses: list[str]) -> None:
        for utterance_id, reference, hypothesis in zip(batch.ids, batch.texts, hypotheses):
            self._fp.write(
                json.dumps({"id": utterance_id, "reference": reference, "hypothesis": hypothesis}, ensure_ascii=False)
                + "\n"
            )

        self._fp.flush()
