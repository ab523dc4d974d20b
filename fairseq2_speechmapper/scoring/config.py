"""What the configurations of ``fairseq2 speechmapper evaluate`` and
``evaluate --stage1`` share: the model card, the split evaluated, fairseq2's
gang and common sections, and their checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from fairseq2.recipe.config import CommonSection, GangSection, ReferenceModelSection
from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection


@dataclass(kw_only=True)
class EvalConfig:
    """The base of the evaluation recipes' configurations."""

    model_description: ClassVar[str] = "the model's card"
    """What ``model.name`` names, for the message when it is missing."""

    model: ReferenceModelSection = field(default_factory=ReferenceModelSection)

    dataset: SpeechDatasetSection = field(
        default_factory=lambda: SpeechDatasetSection(name="speechmapper_demo_corpus", valid_split="dev")
    )
    """The manifests; ``valid_split`` is the split evaluated."""

    gang: GangSection = field(default_factory=GangSection)

    common: CommonSection = field(default_factory=lambda: CommonSection(no_sweep_dir=True))

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if self.model.name is None:
            result.add_error(f"`model.name` must name {self.model_description}.")

        if self.dataset.valid_split is None:
            result.add_error("`dataset.valid_split` must name the split to evaluate.")

        return result
