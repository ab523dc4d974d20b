"""The stage-1 train unit: speech → frozen speech encoder → mapper → loss against the
LLM's embeddings of the transcript (validation: :class:`Stage1EvalUnit`)."""

from __future__ import annotations

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
    Stage1Model,
    TargetEmbeddings,
    add_stage1_loss_metrics,
    sum_kept,
    sum_kept_loss,
    update_stage1_loss_metrics,
)
from fairseq2_speechmapper.stage1.ctc import BatchVocabularyCTCLoss


@final
class AuxiliaryCTC:
    """The auxiliary CTC term of :class:`PretrainUnit`: its weight, the loss,
    and the (unwrapped) mapper whose CTC head it reads."""

    def __init__(self, weight: float, loss: BatchVocabularyCTCLoss, mapper: SpeechMapper) -> None:
        self.weight = weight
        self.loss = loss
        self.mapper = mapper


@final
class PretrainUnit(TrainUnit[SpeechBatch]):
    def __init__(
        self,
        model: Stage1Model,
        targets: TargetEmbeddings,
        loss: EmbeddingRegressionLoss,
        guard: NonFiniteStepGuard,
        ctc: AuxiliaryCTC | None = None,
    ) -> None:
        self._model = model
        self._targets = targets
        self._loss = loss
        self._guard = guard
        self._ctc = ctc

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        add_stage1_loss_metrics(metric_bag)

        if self._ctc is not None:
            metric_bag.add("ctc_loss", Mean())

    @override
    def process_batch(self, batch: SpeechBatch, metric_bag: MetricBag) -> tuple[Tensor, int]:
        outputs, output_lens = self._model(batch)

        targets = self._targets(batch.target_ids, output_lens)

        output = self._loss(outputs, targets)

        if self._ctc is not None:
            ctc_losses = self._ctc.loss(self._ctc.mapper, batch.target_ids)

            output.loss = output.loss + self._ctc.weight * ctc_losses

            if targets.num_kept > 0:
                metric_bag.get("ctc_loss", Mean).update(
                    sum_kept(ctc_losses.detach(), targets.keep) / targets.num_kept, weight=targets.num_kept
                )

        loss, num_kept = sum_kept_loss(output, targets)

        self._guard.observe_loss(loss, batch)

        update_stage1_loss_metrics(metric_bag, output, outputs, targets, num_bad_samples=batch.num_bad_samples)

        return loss, num_kept

    @override
    def set_step_nr(self, step_nr: int) -> None:
        self._guard.begin_step(step_nr)
