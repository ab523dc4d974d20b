"""``fairseq2 speechmapper evaluate``: generate with a speech LLM over a
manifest split (every rank its shard), then score the hypotheses on rank 0:
WER (ASR), BLEU/chrF, COMET and target-language adherence (ST), EM/F1 and an
LLM judge (spoken QA)."""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import torch
from typing_extensions import override

from fairseq2.data.tokenizers import load_tokenizer
from fairseq2.generator import Generator
from fairseq2.logging import log
from fairseq2.metrics.formatters import format_as_int
from fairseq2.metrics.recorders import MetricDescriptor
from fairseq2.models import load_model
from fairseq2.models.transformer_lm import TransformerLM
from fairseq2.recipe.base import Recipe, RecipeContext
from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.task import Task

from fairseq2_speechmapper.recipe_support.data import SplitReaderFactory, describe_split, open_dataset
from fairseq2_speechmapper.recipe_support.speech_llm import load_recipe_speech_llm
from fairseq2_speechmapper.recipes.evaluate.config import ScoringSection, SpeechEvalConfig
from fairseq2_speechmapper.recipes.evaluate.scores import read_hypotheses, score_hypotheses
from fairseq2_speechmapper.recipes.evaluate.units import HypothesisFile, SpeechGenerationUnit
from fairseq2_speechmapper.scoring import format_scores_table, write_scores
from fairseq2_speechmapper.speech_llm import ChatTemplate, InstructionBuilder, SpeechLLMSetupError
from fairseq2_speechmapper.speech_llm.generation import GenerationOptions, generate_text
from fairseq2_speechmapper.stage1 import register_stage1_metric_descriptors


@final
class SpeechEvalRecipe(Recipe):
    @override
    def register(self, container: DependencyContainer) -> None:
        register_stage1_metric_descriptors(container)

        for descriptor in (
            MetricDescriptor("num_generated_tokens", "Generated Tokens", 810, format_as_int),
            MetricDescriptor("num_truncated", "Stopped at max_new_tokens", 811, format_as_int),
        ):
            container.collection.register_instance(MetricDescriptor, descriptor)

    @override
    def create_task(self, context: RecipeContext) -> Task:
        config = context.get_config_as(SpeechEvalConfig)

        gangs = context.gangs

        dataset = open_dataset(context, config.dataset)

        model, tokenizer, card = load_recipe_speech_llm(context, str(config.model.name), config.speech_llm, dataset)

        split = str(config.dataset.valid_split)

        readers = SplitReaderFactory(
            context, dataset, config.dataset, model.speech_encoder, tokenizer, seed=config.common.seed
        )

        reader = readers.create(split, training=False)

        test_set, manifest = describe_split(dataset, config.dataset, split)

        log.info("Evaluating on {} (manifest {}).", test_set, manifest)

        hypothesis_dir = context.output_dir / "hypotheses"

        unit = SpeechGenerationUnit(
            model,
            InstructionBuilder(model, config.task),
            tokenizer.create_decoder(skip_special_tokens=True),
            HypothesisFile(hypothesis_dir / f"{split}.rank_{gangs.root.rank}.jsonl"),
            task=config.task.task,
            test_set=test_set,
            options=config.generation,
        )

        generator = context.create_generator(unit, reader)

        hypothesis_files = [hypothesis_dir / f"{split}.rank_{rank}.jsonl" for rank in range(gangs.root.size)]

        def score() -> None:
            records = read_hypotheses(hypothesis_files)

            log.info("Scoring {} hypotheses from {}.", len(records), hypothesis_dir)

            reports = score_hypotheses(
                records,
                system=card.name,
                test_set=test_set,
                task=config.task.task,
                section=config.scoring,
                complete_judge_prompts=_load_judge(config.scoring, gangs.root.device),
            )

            for report in reports:
                report.info["manifest"] = manifest

            scores_file = context.output_dir / "scores.json"

            write_scores(scores_file, reports)

            log.info("Scores written to {}:\n{}", scores_file, format_scores_table(reports))

        return GenerateThenScore(generator, score if gangs.root.rank == 0 else None)

    @property
    @override
    def config_kls(self) -> type[object]:
        return SpeechEvalConfig


@final
class GenerateThenScore(Task):
    """Runs the generator, then (on rank 0) scores what every rank wrote."""

    def __init__(self, generator: Generator, score: Callable[[], None] | None) -> None:
        self._generator = generator
        self._score = score

    @override
    def run(self) -> None:
        # The generator ends with a barrier: every rank's file is complete.
        self._generator.run()

        if self._score is not None:
            self._score()

    @override
    def request_stop(self) -> None:
        self._generator.request_stop()

    @override
    def close(self) -> None:
        self._generator.close()

    @property
    @override
    def step_nr(self) -> int:
        return self._generator.step_nr


def _load_judge(section: ScoringSection, device: torch.device) -> Callable[[list[str]], list[str]] | None:
    """The LLM judge as prompts in, replies out, each prompt a user turn of the
    judge's own chat template."""
    if section.judge_llm is None:
        return None

    name = section.judge_llm

    llm = load_model(name, device=device, dtype=torch.float32)
    if not isinstance(llm, TransformerLM):
        raise SpeechLLMSetupError(f"The judge `{name}` is not a decoder-only LLM (a fairseq2 `TransformerLM`).")

    llm.requires_grad_(False).eval()

    tokenizer = load_tokenizer(name)

    chat_template = ChatTemplate(tokenizer, llm_name=name)

    options = GenerationOptions(max_new_tokens=section.judge_max_new_tokens)

    def complete(prompts: list[str]) -> list[str]:
        return generate_text(
            llm,
            tokenizer,
            [chat_template.text_prompt(prompt) for prompt in prompts],
            options=options,
            stop_token_ids=chat_template.stop_token_ids,
        )

    log.info("Spoken-QA answers are judged by `{}`.", name)

    return complete
