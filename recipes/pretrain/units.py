"""The stage-1 train unit: speech → frozen speech encoder → mapper → loss against the
LLM's embeddings of the transcript (validation: :class:`Stage1EvalUnit`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import final

from torch import Tensor
from typing_extensions import override

from fairseq2.metrics import Mean, MetricBag
from fairseq2.trainer import TrainUnit

from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.models.speechmapper import SpeechMapper
from fairseq2_speechmapper.recipe_support.faults import NonFiniteStepGuard
from fairseq2_speechmapper.stage1 import (
    EmbeddingRegressionLoss,
    Stage1LossSection,
    Stage1Model,
    Stage1SetupError,
    TargetEmbeddings,
    add_stage1_loss_metrics,
    sum_kept,
    sum_kept_loss,
    update_stage1_loss_metrics,
)
from fairseq2_speechmapper.stage1.ctc import BatchVocabularyCTCLoss
from fairseq2_speechmapper.stage1.firing import fire_count_errors


@final
class AuxiliaryTerm:
    """A term of :class:`PretrainUnit`'s loss besides the paper's: per-example
    losses from the transcripts' token ids (and what the mapper kept of its
    last forward), their weight, and the metric that reports them."""

    def __init__(self, metric_name: str, weight: float, compute: Callable[[Sequence[Tensor]], Tensor]) -> None:
        self.metric_name = metric_name
        self.weight = weight
        self.compute = compute

    @staticmethod
    def ctc(weight: float, loss: BatchVocabularyCTCLoss, mapper: SpeechMapper) -> AuxiliaryTerm:
        """The CTC term on the (unwrapped) ``mapper``'s CTC head."""
        return AuxiliaryTerm("ctc_loss", weight, lambda target_ids: loss(mapper, target_ids))

    @staticmethod
    def fire_count(weight: float, mapper: SpeechMapper) -> AuxiliaryTerm:
        """The count term of the (unwrapped) ``mapper``'s integrate-and-fire."""
        return AuxiliaryTerm(
            "fire_count_error",
            weight,
            lambda target_ids: fire_count_errors(mapper.pop_fire_weight_sums(), target_ids),
        )


def create_pretrain_unit(
    model: Stage1Model,
    targets: TargetEmbeddings,
    loss: EmbeddingRegressionLoss,
    guard: NonFiniteStepGuard,
    section: Stage1LossSection,
    mapper: SpeechMapper,
    *,
    arch: str | None,
) -> PretrainUnit:
    """The recipe's train unit: the paper's ``loss`` and the terms ``section``
    adds on the (unwrapped) ``mapper``. Trained on its targets' counts, a
    mapper that integrates and fires has no pad positions to report."""
    terms = _auxiliary_terms(section, mapper, targets, arch=arch)

    return PretrainUnit(model, targets, loss, guard, terms, pad_distance=not mapper.integrates_and_fires)


def _auxiliary_terms(
    section: Stage1LossSection, mapper: SpeechMapper, targets: TargetEmbeddings, *, arch: str | None
) -> list[AuxiliaryTerm]:
    """The terms ``section`` asks for besides the paper's, on the (unwrapped)
    ``mapper``: CTC where ``ctc_weight`` is set, the count term where the
    mapper integrates and fires."""
    terms = []

    if section.ctc_weight > 0.0:
        if mapper.ctc_head is None:
            raise Stage1SetupError(
                f"`loss.ctc_weight` is {section.ctc_weight}, but the mapper architecture `{arch}` has no CTC head; use one with `ctc_block` set (e.g. `small_ctc`) or set `loss.ctc_weight=0`."
            )

        terms.append(AuxiliaryTerm.ctc(section.ctc_weight, BatchVocabularyCTCLoss(targets.embedding_table), mapper))

    if mapper.integrates_and_fires and section.count_weight > 0.0:
        terms.append(AuxiliaryTerm.fire_count(section.count_weight, mapper))

    return terms


@final
class PretrainUnit(TrainUnit[SpeechBatch]):
    def __init__(
        self,
        model: Stage1Model,
        targets: TargetEmbeddings,
        loss: EmbeddingRegressionLoss,
        guard: NonFiniteStepGuard,
        auxiliary_terms: Sequence[AuxiliaryTerm] = (),
        *,
        pad_distance: bool = True,
    ) -> None:
        self._model = model
        self._targets = targets
        self._loss = loss
        self._guard = guard
        self._auxiliary_terms = auxiliary_terms
        self._pad_distance = pad_distance

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        add_stage1_loss_metrics(metric_bag, pad_distance=self._pad_distance)

        for term in self._auxiliary_terms:
            metric_bag.add(term.metric_name, Mean())

    @override
    def process_batch(self, batch: SpeechBatch, metric_bag: MetricBag) -> tuple[Tensor, int]:
        outputs, output_lens = self._model(batch)

        targets = self._targets(batch.target_ids, output_lens)

        output = self._loss(outputs, targets)

        for term in self._auxiliary_terms:
            term_losses = term.compute(batch.target_ids)

            output.loss = output.loss + term.weight * term_losses

            if targets.num_kept > 0:
                metric_bag.get(term.metric_name, Mean).update(
                    sum_kept(term_losses.detach(), targets.keep) / targets.num_kept, weight=targets.num_kept
                )

        loss, num_kept = sum_kept_loss(output, targets)

        self._guard.observe_loss(loss, batch)

        update_stage1_loss_metrics(metric_bag, output, outputs, targets, num_bad_samples=batch.num_bad_samples)

        return loss, num_kept

    @override
    def set_step_nr(self, step_nr: int) -> None:
        self._guard.begin_step(step_nr)
