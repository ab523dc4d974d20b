"""The configuration of ``fairseq2 speechmapper evaluate --stage1``: a
pretrained mapper's card, the manifests and the stage-1 loss."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from fairseq2.recipe.config import EvaluatorSection, ReferenceModelSection
from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.scoring.config import EvalConfig
from fairseq2_speechmapper.stage1 import Stage1LossSection


@dataclass(kw_only=True)
class Stage1EvalConfig(EvalConfig):
    model_description: ClassVar[str] = "the pretrained mapper's card"

    model: ReferenceModelSection = field(default_factory=lambda: ReferenceModelSection(name="speechmapper_demo"))
    """The trained mapper's card (``pretrain`` writes ``speechmapper_<output dir name>``);
    its speech encoder, layer, LLM and pad token are read from the card."""

    loss: Stage1LossSection = field(default_factory=Stage1LossSection)

    evaluator: EvaluatorSection = field(default_factory=EvaluatorSection)

    def validate(self) -> ValidationResult:
        result = super().validate()

        # One pass over a test set costs what extracting its features would.
        if self.dataset.feature_cache is not None:
            result.add_error(
                "`evaluate --stage1` reads audio manifests, not `dataset.feature_cache`; set `dataset.manifest_dir` or `dataset.name`."
            )

        return result
