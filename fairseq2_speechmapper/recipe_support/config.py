"""Configuration sections that several recipes share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fairseq2.recipe.config import (
    AdamWConfig,
    CommonSection,
    CosineAnnealingLRConfig,
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
from fairseq2_speechmapper.models.speechmapper import SPEECHMAPPER_FAMILY


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
    instead of running the speech encoder on audio, and the speech encoder is not loaded. It must
    hold the splits read and the features asked for (pretraining:
    ``speech_encoder``; instruct and evaluate: the mapper card's speech encoder); no
    manifest is needed."""

    def validate(self) -> ValidationResult:
        result = SpeechReadOptions.validate(self)

        if self.name is None and self.manifest_dir is None and not self.manifests and self.feature_cache is None:
            result.add_error(
                "`name` (a dataset card), `manifest_dir`, `manifests` or `feature_cache` must be specified."
            )

        return result


@dataclass(kw_only=True)
class MapperCardSection:
    """The asset card written for the trained mapper at every checkpoint."""

    name: str | None = None
    """The card's name; by default ``speechmapper_`` + the output directory's name."""


@dataclass(kw_only=True)
class SpeechTrainingConfig:
    """The fairseq2 sections that the training recipes (``pretrain``,
    ``instruct``) share; each recipe's configuration adds its own sections
    after these and sets its own defaults by redefining a field."""

    model: ModelSection = field(default_factory=lambda: ModelSection(family=SPEECHMAPPER_FAMILY))

    dataset: SpeechDatasetSection = field(default_factory=SpeechDatasetSection)

    mapper_card: MapperCardSection = field(default_factory=MapperCardSection)

    gang: GangSection = field(default_factory=GangSection)

    trainer: TrainerSection = field(default_factory=TrainerSection)

    optimizer: OptimizerSection = field(
        default_factory=lambda: OptimizerSection(name="adamw", config=AdamWConfig(lr=1e-4, impl="fused"))
    )
    """AdamW, fused: one kernel updates all parameters (torch's CUDA default
    is ``foreach``); CPU has the fused kernel too."""

    lr_scheduler: LRSchedulerSection = field(default_factory=LRSchedulerSection)

    regime: RegimeSection = field(default_factory=RegimeSection)

    common: CommonSection = field(default_factory=CommonSection)

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        # fairseq2 0.8.1's trainer fails with an internal error on
        # `validate_at_start` when there is nothing to validate on.
        if self.dataset.valid_split is None and self.regime.validate_at_start:
            result.add_error(
                "`dataset.valid_split` is null, so there is nothing to validate on: set `regime.validate_at_start=false`."
            )

        # fairseq2 0.8.1 divides by the cycle, `num_steps - num_warmup_steps`,
        # after the last warm-up step instead of refusing an empty one (a
        # warm-up longer than the run never gets there).
        scheduler = self.lr_scheduler.config
        num_steps = self.regime.num_steps

        if isinstance(scheduler, CosineAnnealingLRConfig) and scheduler.cycle_len is None:
            if scheduler.num_warmup_steps == num_steps:
                result.add_error(
                    f"`lr_scheduler.config.num_warmup_steps` equals `regime.num_steps` ({num_steps}), which leaves the cosine schedule no step after the warm-up: make the warm-up shorter."
                )

        return result
