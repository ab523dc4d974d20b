"""The stage-1 pretraining configuration. Its defaults are the paper's set-up
(``presets/paper.yaml`` spells them out); ``presets/demo.yaml`` is what runs
when no configuration is given."""

from __future__ import annotations

from dataclasses import dataclass, field

from fairseq2.recipe.config import CosineAnnealingLRConfig, LRSchedulerSection, ModelSection, RegimeSection

from fairseq2_speechmapper.models.speechmapper import SPEECHMAPPER_FAMILY
from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection, SpeechTrainingConfig
from fairseq2_speechmapper.stage1 import Stage1LossSection, Stage1SpeechEncoderSection, TargetLLMSection


@dataclass(kw_only=True)
class PretrainConfig(SpeechTrainingConfig):
    # The shared sections' defaults for stage 1 (a redefined field keeps its place).
    model: ModelSection = field(
        default_factory=lambda: ModelSection(family=SPEECHMAPPER_FAMILY, arch="paper_llama3_8b")
    )

    dataset: SpeechDatasetSection = field(
        default_factory=lambda: SpeechDatasetSection(
            name="librispeech_960h_manifest", train_split="train-960", valid_split="dev-clean"
        )
    )

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

    # Stage 1's own sections.
    speech_encoder: Stage1SpeechEncoderSection = field(default_factory=Stage1SpeechEncoderSection)

    llm: TargetLLMSection = field(default_factory=TargetLLMSection)

    loss: Stage1LossSection = field(default_factory=Stage1LossSection)
