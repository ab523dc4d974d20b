"""The configuration of ``fairseq2 speechmapper evaluate``: generate with a
speech LLM over a manifest split and score the outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from fairseq2.recipe.config import GeneratorSection, ReferenceModelSection
from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.scoring.config import EvalConfig
from fairseq2_speechmapper.speech_llm import SpeechLLMSection, SpeechTaskSection
from fairseq2_speechmapper.speech_llm.generation import GenerationOptions


@dataclass(kw_only=True)
class ScoringSection:
    comet_model: str | None = None
    """COMET model for translation (``Unbabel/wmt22-comet-da``, the paper's, from
    the Hugging Face cache, or a local checkpoint path); ``None`` skips COMET."""

    comet_batch_size: int = 16

    language_adherence: bool = True
    """Translation: report the share of outputs identified as the target language."""

    judge_llm: str | None = None
    """Spoken QA: the card of an instruct LLM that judges each answer against the
    references (LLM-as-judge accuracy); ``None`` reports exact match and F1 only."""

    judge_max_new_tokens: int = 8

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if self.comet_batch_size < 1:
            result.add_error(f"`comet_batch_size` must be at least 1, but is {self.comet_batch_size}.")

        if self.judge_max_new_tokens < 1:
            result.add_error(f"`judge_max_new_tokens` must be at least 1, but is {self.judge_max_new_tokens}.")

        return result


@dataclass(kw_only=True)
class SpeechEvalConfig(EvalConfig):
    model_description: ClassVar[str] = "the speech LLM's mapper card"

    model: ReferenceModelSection = field(default_factory=lambda: ReferenceModelSection(name="speechmapper_demo_it"))
    """The speech LLM's mapper card (``instruct`` writes ``speechmapper_<output dir
    name>``; a pretrained mapper's card evaluates it zero-shot)."""

    speech_llm: SpeechLLMSection = field(default_factory=SpeechLLMSection)

    task: SpeechTaskSection = field(default_factory=SpeechTaskSection)
    """The task and its instruction: the first wording of the task's prompts."""

    generation: GenerationOptions = field(default_factory=GenerationOptions)
    """Greedy with at most 150 new tokens, as in the paper."""

    scoring: ScoringSection = field(default_factory=ScoringSection)

    generator: GeneratorSection = field(default_factory=GeneratorSection)
