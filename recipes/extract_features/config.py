"""The configuration of ``fairseq2 speechmapper extract-features``: the speech encoder,
the manifests (as in pretraining) and how the features are stored."""

from __future__ import annotations

from dataclasses import dataclass, field

from fairseq2.recipe.config import CommonSection, GangSection
from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.features import FeatureStorageSection, SpeechEncoderSection
from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection


@dataclass(kw_only=True)
class ExtractFeaturesConfig:
    speech_encoder: SpeechEncoderSection = field(default_factory=SpeechEncoderSection)

    dataset: SpeechDatasetSection = field(
        default_factory=lambda: SpeechDatasetSection(
            name="librispeech_960h_manifest", train_split="train-960", valid_split="dev-clean"
        )
    )
    """The manifests, as in the pretraining config; the duration limits and
    the batch budget (``max_batch_seconds``, ``max_batch_size``) apply."""

    splits: list[str] | None = None
    """The splits to extract; by default ``dataset.train_split`` and
    ``dataset.valid_split``, the ones pretraining reads."""

    storage: FeatureStorageSection = field(default_factory=FeatureStorageSection)

    verify: bool = False
    """Check every shard of the cache in OUTPUT_DIR against its checksums
    (the speech encoder is not loaded), instead of extracting."""

    gang: GangSection = field(default_factory=GangSection)

    common: CommonSection = field(default_factory=lambda: CommonSection(no_sweep_dir=True))

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if self.dataset.feature_cache is not None:
            result.add_error("`dataset.feature_cache` is for pretraining; the features are written to OUTPUT_DIR.")

        return result

    @property
    def split_names(self) -> list[str]:
        if self.splits is not None:
            return list(self.splits)

        return [self.dataset.train_split] + ([self.dataset.valid_split] if self.dataset.valid_split else [])
