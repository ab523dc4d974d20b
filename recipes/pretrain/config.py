"""The stage-1 pretraining configuration. Its defaults are the paper's set-up
(``presets/paper.yaml`` spells them out); ``presets/demo.yaml`` is what runs
when no configuration is given."""

from __future__ import annotations

from dataclasses import dataclass, field

from fairseq2.recipe.config import (
    AdamWConfig,
    CommonSection,
    CosineAnnealingLRConfig,
    GangSection,
    LRSchedulerSection,
    ModelSection,
    OptimizerSection,
    RegimeSection,
    TrainerSection,
)
from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.models.speechmapper import SPEECHMAPPER_FAMILY
from fairseq2_speechmapper.recipe_support.config import (
    MapperCardSection,
    SpeechDatasetSection,
    check_validation_at_start,
)
from fairseq2_speechmapper.stage1 import SpeechEncoderSection, Stage1LossSection, TargetLLMSection


@dataclass(kw_only=True)
class PretrainConfig:
    model: ModelSection = field(
        default_factory=lambda: ModelSection(family=SPEECHMAPPER_FAMILY, arch="paper_llama3_8b")
    )

    speech_encoder: SpeechEncoderSection = field(default_factory=SpeechEncoderSection)

    llm: TargetLLMSection = field(default_factory=TargetLLMSection)

    dataset: SpeechDatasetSection = field(
        default_factory=lambda: SpeechDatasetSection(
            name="librispeech_960h_manifest", train_split="train-960", valid_split="dev-clean"
        )
    )

    loss: Stage1LossSection = field(default_factory=Stage1LossSection)

    mapper_card: MapperCardSection = field(default_factory=MapperCardSection)

    gang: GangSection = field(default_factory=GangSection)

    trainer: TrainerSection = field(default_factory=TrainerSection)

    optimizer: OptimizerSection = field(
        default_factory=lambda: OptimizerSection(name="adamw", config=AdamWConfig(lr=1e-4, impl="fused"))
    )
    """AdamW, fused: one kernel updates all parameters (torch's CUDA default
    is ``foreach``); CPU has the fused kernel too."""

    lr_scheduler: LRSchedulerSection = field(
        default_factory=lambda: LRSchedulerSection(
            name="cosine_annealing",
            config=CosineAnnealingLRConfig(num_warmup_steps=100_000, final_lr_scale=0.01),
        )
    )

    regime: RegimeSection = field(
        default_factory=lambda: RegimeSection(
            num_steps=2_000_000,
            validate_every_n_steps=10_000,
            checkpoint_every_n_steps=10_000,
            keep_last_n_checkpoints=3,
            publish_metrics_every_n_steps=100,
        )
    )

    common: CommonSection = field(default_factory=CommonSection)

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        check_validation_at_start(self.dataset, self.regime, result)

        return result
