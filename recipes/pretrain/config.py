"""The stage-1 pretraining configuration. Its defaults are the paper's set-up
(``presets/paper.yaml`` spells them out); ``presets/demo.yaml`` is what runs
when no configuration is given."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fairseq2.recipe.config import (
    AdamWConfig,
    CosineAnnealingLRConfig,
    CommonSection,
    DatasetSection,
    GangSection,
    LRSchedulerSection,
    ModelSection,
    OptimizerSection,
    RegimeSection,
    TrainerSection,
)
from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.datasets import SPEECH_MANIFEST_FAMILY, SpeechReadOptions
from fairseq2_speechmapper.features.config import SFMSection
from fairseq2_speechmapper.models.speechmapper import SPEECHMAPPER_FAMILY
from fairseq2_speechmapper.recipes.pretrain.criterion import Stage1LossSection


@dataclass(kw_only=True)
class SpeechEncoderSection(SFMSection):
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


@dataclass(kw_only=True)
class SpeechDatasetSection(DatasetSection, SpeechReadOptions):
    """A dataset card (``name``), or manifests given directly."""

    family: str | None = SPEECH_MANIFEST_FAMILY

    manifest_dir: Path | None = None
    """A directory of ``<split>.jsonl`` / ``<split>.tsv`` manifests; when set,
    no dataset card is needed (``name`` is ignored)."""

    manifests: dict[str, Path] = field(default_factory=dict)
    """Manifest files by split, e.g. ``{train: a.jsonl, dev: b.tsv}``; when
    set, no dataset card is needed."""

    train_split: str = "train"

    valid_split: str | None = "dev"
    """The held-out split validated on; ``None`` to skip validation."""

    feature_cache: Path | None = None
    """A directory written by ``extract-features``: its features are read
    instead of running the SFM on audio, and the SFM is not loaded. It must
    hold the splits read and the features asked for (pretraining:
    ``speech_encoder``; instruct and evaluate: the mapper card's SFM); no
    manifest is needed."""

    def validate(self) -> ValidationResult:
        result = SpeechReadOptions.validate(self)

        if self.name is None and self.manifest_dir is None and not self.manifests and self.feature_cache is None:
            result.add_error("`name` (a dataset card), `manifest_dir`, `manifests` or `feature_cache` must be specified.")

        return result


@dataclass(kw_only=True)
class MapperCardSection:
    """The asset card written for the trained mapper at every checkpoint."""

    name: str | None = None
    """The card's name; by default ``speechmapper_`` + the output directory's name."""


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
        default_factory=lambda: OptimizerSection(name="adamw", config=AdamWConfig(lr=1e-4))
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

    common: CommonSection = field(default_factory=CommonSection)

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        # fairseq2 0.8.1's trainer fails with an internal error on
        # `validate_at_start` when there is nothing to validate on.
        if self.dataset.valid_split is None and self.regime.validate_at_start:
            result.add_error("`dataset.valid_split` is null, so there is nothing to validate on: set `regime.validate_at_start=false`.")

        return result
