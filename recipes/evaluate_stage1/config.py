"""The configuration of ``fairseq2 speechmapper evaluate --stage1``: a
pretrained mapper's card, the manifests and the stage-1 loss."""

from __future__ import annotations

from dataclasses import dataclass, field

from fairseq2.recipe.config import CommonSection, EvaluatorSection, GangSection, ReferenceModelSection
from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection
from fairseq2_speechmapper.stage1 import Stage1LossSection


@dataclass(kw_only=True)
class Stage1EvalConfig:
    model: ReferenceModelSection = field(default_factory=lambda: ReferenceModelSection(name="speechmapper_demo"))
    """The trained mapper's card (``pretrain`` writes ``speechmapper_<output dir name>``);
    its SFM, layer, LLM and pad token are read from the card."""

    dataset: SpeechDatasetSection = field(
        default_factory=lambda: SpeechDatasetSection(name="speechmapper_demo_corpus", valid_split="dev")
    )
    """The manifests; ``valid_split`` is the split evaluated."""

    loss: Stage1LossSection = field(default_factory=Stage1LossSection)

    gang: GangSection = field(default_factory=GangSection)

    evaluator: EvaluatorSection = field(default_factory=EvaluatorSection)

    common: CommonSection = field(default_factory=lambda: CommonSection(no_sweep_dir=True))

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if self.model.name is None:
            result.add_error("`model.name` must name the pretrained mapper's card.")

        if self.dataset.valid_split is None:
            result.add_error("`dataset.valid_split` must name the split to evaluate.")

        # One pass over a test set costs what extracting its features would.
        if self.dataset.feature_cache is not None:
            result.add_error(
                "`evaluate --stage1` reads audio manifests, not `dataset.feature_cache`; set `dataset.manifest_dir` or `dataset.name`."
            )

        return result
