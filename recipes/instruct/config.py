"""The instruction-tuning (stage 2) configuration. Its defaults are the paper's
task-agnostic set-up (ASR instructions, Llama 3.1 8B Instruct, 1K steps of 12 ×
8 utterances at a constant 1e-4); ``presets/`` holds the paper's variants and
the demo."""

from __future__ import annotations

from dataclasses import dataclass, field

from fairseq2.recipe.config import PASSTHROUGH_LR, CommonSection, LRSchedulerSection, ModelSection, RegimeSection
from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.models.speechmapper import SPEECHMAPPER_FAMILY
from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection, SpeechTrainingConfig
from fairseq2_speechmapper.speech_llm import SpeechLLMSection, SpeechTaskSection
from fairseq2_speechmapper.stage1 import Stage1LossSection


@dataclass(kw_only=True)
class InstructTaskSection(SpeechTaskSection):
    asr_mix_prob: float = 0.0
    """The probability that a batch is turned into an ASR batch (its
    transcripts as responses) whatever ``task`` is; the paper mixes in ASR with
    0.5 for spoken QA."""

    def validate(self) -> ValidationResult:
        result = super().validate()

        if not 0.0 <= self.asr_mix_prob <= 1.0:
            result.add_error(f"`asr_mix_prob` must be between 0 and 1, but is {self.asr_mix_prob}.")

        return result


@dataclass(kw_only=True)
class InstructLossSection:
    """``(1 − σ)·CE + σ·L_stage1``: cross-entropy of the response tokens through
    the frozen LLM, plus the stage-1 loss of the mapper's output against the
    transcript's embeddings, which keeps the output in the LLM's embedding
    space (the paper's "CE+MSE": σ = 0.9)."""

    sigma: float = 0.0

    stage1: Stage1LossSection = field(default_factory=Stage1LossSection)
    """The stage-1 loss (the mapper card's pad token is its pad)."""

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if not 0.0 <= self.sigma <= 1.0:
            result.add_error(f"`sigma` must be between 0 and 1, but is {self.sigma}.")

        return result


@dataclass(kw_only=True)
class LLMLoRASection:
    """LoRA adapters on the LLM's query and value projections, trained with
    the mapper and saved in its checkpoint. Off, as in the paper (the LLM stays
    fully frozen)."""

    enabled: bool = False

    rank: int = 8

    alpha: float = 16.0

    dropout_p: float = 0.0

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if self.rank < 1:
            result.add_error(f"`rank` must be at least 1, but is {self.rank}.")

        if not 0.0 <= self.dropout_p < 1.0:
            result.add_error(f"`dropout_p` must be in [0, 1), but is {self.dropout_p}.")

        return result


@dataclass(kw_only=True)
class InstructConfig(SpeechTrainingConfig):
    # The shared sections' defaults for stage 2 (a redefined field keeps its place).
    model: ModelSection = field(
        default_factory=lambda: ModelSection(name="speechmapper_paper_llama3_1_8b_instruct", family=SPEECHMAPPER_FAMILY)
    )
    """The pretrained mapper's card (``pretrain`` writes ``speechmapper_<output dir name>``);
    its speech encoder, layer and LLM are read from the card."""

    dataset: SpeechDatasetSection = field(
        default_factory=lambda: SpeechDatasetSection(
            name="librispeech_960h_manifest",
            train_split="train-960",
            valid_split="dev-clean",
            max_batch_size=12,
            max_batch_seconds=12 * 35.0,
        )
    )

    lr_scheduler: LRSchedulerSection = field(
        default_factory=lambda: LRSchedulerSection(name=PASSTHROUGH_LR, config=None)
    )
    """``passthrough``: the paper's constant learning rate."""

    regime: RegimeSection = field(
        default_factory=lambda: RegimeSection(
            num_steps=1_000,
            validate_every_n_steps=250,
            checkpoint_every_n_steps=250,
            keep_last_n_checkpoints=2,
            publish_metrics_every_n_steps=10,
        )
    )

    common: CommonSection = field(default_factory=lambda: CommonSection(no_sweep_dir=True))

    # Stage 2's own sections.
    speech_llm: SpeechLLMSection = field(default_factory=SpeechLLMSection)

    lora: LLMLoRASection = field(default_factory=LLMLoRASection)

    task: InstructTaskSection = field(default_factory=InstructTaskSection)

    loss: InstructLossSection = field(default_factory=InstructLossSection)

    def validate(self) -> ValidationResult:
        result = super().validate()

        if self.model.name is None:
            result.add_error("`model.name` must name the pretrained mapper's card.")

        return result
