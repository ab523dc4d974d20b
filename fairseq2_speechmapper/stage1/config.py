"""The configuration sections of stage 1 that pretraining and the stage-1
evaluation share."""

from __future__ import annotations

from dataclasses import dataclass

from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.features.config import SpeechEncoderSection


@dataclass(kw_only=True)
class Stage1SpeechEncoderSection(SpeechEncoderSection):
    """The frozen speech foundation model."""

    cache_features_in_memory: bool = False
    """Keep each utterance's features in memory after the first epoch (the SFM
    is frozen, so they never change); for corpora whose features fit in RAM.
    ``dataset.feature_cache`` keeps them on disk instead."""


@dataclass(kw_only=True)
class TargetLLMSection:
    """The LLM whose tokenizer and token-embedding table define the targets;
    the LLM itself is never loaded."""

    name: str = "llama3_1_8b_instruct"
    """The LLM's asset card."""

    pad_token: str | None = None
    """The token whose embedding pads the targets; by default the tokenizer's
    pad token, else a reserved token of the vocabulary."""

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if not self.name:
            result.add_error("`name` must name the LLM's asset card.")

        if self.pad_token == "":
            result.add_error("`pad_token` must be a token or null (the tokenizer's pad token), not empty.")

        return result
