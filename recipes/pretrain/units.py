"""The stage-1 train unit: speech → frozen SFM → mapper → loss against the
LLM's embeddings of the transcript (validation: :class:`Stage1EvalUnit`)."""

from __future__ import annotations

from typing import final

from torch import Tensor
from typing_extensions import override

from fairseq2.metrics import MetricBag
from fairseq2.trainer import TrainUnit

from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.recipe_support.faults import NonFiniteStepGuard
from fairseq2_speechmapper.stage1 import (
    EmbeddingRegressionLoss,
    Stage1Model,
    TargetEmbeddings,
    add_stage1_loss_metrics,
    sum_kept_loss,
    update_stage1_loss_metrics,
)


@final
class PretrainUnit(TrainUnit[SpeechBatch]):
    def __init__(
        self, model: Stage1Model, targets: TargetEmbeddings, loss: EmbeddingRegressionLoss, guard: NonFiniteStepGuard
    ) -> None:
        self._model = model
        self._targets = targets
        self._loss = loss
        self._guard = guard

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        add_stage1_loss_metrics(metric_bag)

    @override
    def process_batch(self, batch: SpeechBatch, metric_bag: MetricBag) -> tuple[Tensor, int]:
        outputs, output_lens = self._model(batch)

        targets = self._targets(batch.target_ids, output_lens)

        output = self._loss(outputs, targets)

        loss, num_kept = sum_kept_loss(output, targets)

        self._guard.observe_loss(loss, batch)

        update_stage1_loss_metrics(metric_bag, output, outputs, targets, num_bad_samples=batch.num_bad_samples)

        return loss, num_kept

    @override
    def set_step_nr(self, step_nr: int) -> None:
        self._guard.begin_step(step_nr)
