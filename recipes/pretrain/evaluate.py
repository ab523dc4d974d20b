"""``fairseq2 speechmapper evaluate --stage1``: scores a pretrained mapper
(by card name) on any manifest with the stage-1 loss and embedding-space
decoding, and writes each utterance's decoded text."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, final

from typing_extensions import override

from fairseq2.assets import AssetCard
from fairseq2.evaluator import Evaluator
from fairseq2.recipe.base import Recipe, RecipeContext
from fairseq2.recipe.config import CommonSection, EvaluatorSection, GangSection, ReferenceModelSection
from fairseq2.runtime.dependency import DependencyContainer

from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.models.speechmapper import SpeechMapper
from fairseq2_speechmapper.recipes.pretrain.config import SpeechDatasetSection, SpeechEncoderSection, TargetLLMSection
from fairseq2_speechmapper.recipes.pretrain.criterion import Stage1LossSection, create_stage1_loss
from fairseq2_speechmapper.recipes.pretrain.mapper_card import read_mapper_card
from fairseq2_speechmapper.recipes.pretrain.recipe import (
    Stage1SetupError,
    create_decoding_scorer,
    create_split_reader,
    load_stage1_model,
    open_speech_dataset,
    register_stage1_errors,
    register_stage1_metric_descriptors,
)
from fairseq2_speechmapper.recipes.pretrain.units import Stage1EvalUnit


@dataclass(kw_only=True)
class Stage1EvalConfig:
    model: ReferenceModelSection = field(default_factory=lambda: ReferenceModelSection(name="speechmapper_demo"))
    """The trained mapper's card (``pretrain`` writes ``speechmapper_<output dir name>``);
    its SFM, layer, LLM and pad token are read from the card."""

    dataset: SpeechDatasetSection = field(
        default_factory=lambda: SpeechDatasetSection(name="speechmapper_demo_corpus", valid_split="dev")
    )
    """The manifests; ``valid_split`` is the split evaluated."""

    loss: Stage1LossSection = field(default_factory=Stage1LossSection)

    gang: GangSection = field(default_factory=GangSection)

    evaluator: EvaluatorSection = field(default_factory=EvaluatorSection)

    common: CommonSection = field(default_factory=lambda: CommonSection(no_sweep_dir=True))


@final
class Stage1EvalRecipe(Recipe):
    @override
    def register(self, container: DependencyContainer) -> None:
        register_stage1_errors(container)

        register_stage1_metric_descriptors(container)

    @override
    def create_task(self, context: RecipeContext) -> Evaluator:
        config = context.get_config_as(Stage1EvalConfig)

        if config.model.name is None:
            raise Stage1SetupError("`model.name` must name the pretrained mapper's card.")

        if config.dataset.valid_split is None:
            raise Stage1SetupError("`dataset.valid_split` must name the split to evaluate.")

        # One pass over a test set costs what extracting its features would.
        if config.dataset.feature_cache is not None:
            raise Stage1SetupError(
                "`evaluate --stage1` reads audio manifests, not `dataset.feature_cache`; set `dataset.manifest_dir` or `dataset.name`."
            )

        card = context.asset_store.retrieve_card(config.model.name)

        mapper = context.get_model_as(SpeechMapper)

        gangs = context.gangs

        model, tokenizer = load_stage1_model(
            *_sections_of_mapper_card(card),
            mapper=mapper,
            unwrapped_mapper=mapper,
            device=gangs.root.device,
        )

        dataset = open_speech_dataset(context, config.dataset)

        reader = create_split_reader(
            dataset,
            config.dataset.valid_split,
            config.dataset,
            model.speech_encoder,
            tokenizer,
            gangs,
            training=False,
            seed=config.common.seed,
        )

        hypothesis_file = context.output_dir / "hypotheses" / f"stage1.rank_{gangs.root.rank}.jsonl"

        unit = Stage1EvalUnit(
            model,
            create_stage1_loss(config.loss),
            create_decoding_scorer(model, tokenizer),
            hypothesis_sink=HypothesisWriter(hypothesis_file),
        )

        return context.create_evaluator([unit], [reader])

    @property
    @override
    def config_kls(self) -> type[object]:
        return Stage1EvalConfig


def _sections_of_mapper_card(card: AssetCard) -> tuple[SpeechEncoderSection, TargetLLMSection]:
    info = read_mapper_card(card)

    speech_encoder = SpeechEncoderSection(
        name=info.speech_encoder,
        layer=info.speech_encoder_layer,
        whisper_window=info.speech_encoder_options.get("whisper_window", "30s"),  # type: ignore[arg-type]
    )

    return speech_encoder, TargetLLMSection(name=info.llm, pad_token=info.pad_token)


@final
class HypothesisWriter:
    """Writes one JSON line per utterance: id, reference, hypothesis."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)

        self._path = path
        self._fp: TextIO = path.open("w", encoding="utf-8")

    def __call__(self, batch: SpeechBatch, hypotheses: list[str]) -> None:
        for utterance_id, reference, hypothesis in zip(batch.ids, batch.texts, hypotheses):
            self._fp.write(json.dumps({"id": utterance_id, "reference": reference, "hypothesis": hypothesis}, ensure_ascii=False) + "\n")

        self._fp.flush()
