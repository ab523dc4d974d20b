"""The stage-1 train and validation units: speech → frozen SFM → mapper →
loss against the LLM's embeddings of the transcript."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Protocol, final

from torch import Tensor
from typing_extensions import override

from fairseq2.evaluator import EvalUnit
from fairseq2.metrics import MetricBag
from fairseq2.trainer import TrainUnit

from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.recipes.pretrain.criterion import (
    EmbeddingRegressionLoss,
    EmbeddingTargets,
    Stage1LossOutput,
)
from fairseq2_speechmapper.recipes.pretrain.metrics import (
    EmbeddingDecodingScorer,
    add_stage1_loss_metrics,
    finalize_decoding_metrics,
    update_stage1_loss_metrics,
)
from fairseq2_speechmapper.recipes.pretrain.stage1 import Stage1Model


class HypothesisSink(Protocol):
    """Receives each batch's decoded texts (e.g. to write them to a file)."""

    def __call__(self, batch: SpeechBatch, hypotheses: list[str]) -> None: ...


def sum_kept_loss(output: Stage1LossOutput, targets: EmbeddingTargets) -> tuple[Tensor, int]:
    """The summed loss of the kept examples and their number; a batch with
    none gives a zero loss (and gradient) counted as one example, so that the
    trainer never divides by zero."""
    loss = output.loss[targets.keep].sum()

    return loss, max(targets.num_kept, 1)


@final
class PretrainUnit(TrainUnit[SpeechBatch]):
    def __init__(self, model: Stage1Model, loss: EmbeddingRegressionLoss) -> None:
        self._model = model
        self._loss = loss

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        add_stage1_loss_metrics(metric_bag)

    @override
    def process_batch(self, batch: SpeechBatch, metric_bag: MetricBag) -> tuple[Tensor, int]:
        outputs, _, targets = self._model(batch)

        output = self._loss(outputs, targets)

        update_stage1_loss_metrics(metric_bag, output, outputs, targets, num_bad_samples=batch.num_bad_samples)

        return sum_kept_loss(output, targets)


@final
class Stage1EvalUnit(EvalUnit[SpeechBatch]):
    """The loss pieces plus embedding-space decoding (token error rate, WER,
    word/pad token accuracy)."""

    def __init__(
        self,
        model: Stage1Model,
        loss: EmbeddingRegressionLoss,
        scorer: EmbeddingDecodingScorer,
        *,
        hypothesis_sink: HypothesisSink | None = None,
    ) -> None:
        self._model = model
        self._loss = loss
        self._scorer = scorer
        self._hypothesis_sink = hypothesis_sink

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        add_stage1_loss_metrics(metric_bag)

        self._scorer.add_metrics(metric_bag)

    @override
    def process_batch(self, batch: SpeechBatch, metric_bag: MetricBag) -> None:
        outputs, output_lens, targets = self._model(batch)

        output = self._loss(outputs, targets)

        update_stage1_loss_metrics(metric_bag, output, outputs, targets, num_bad_samples=batch.num_bad_samples)

        hypotheses = self._scorer.update(metric_bag, outputs, output_lens, targets, batch.target_ids, batch.texts)

        if self._hypothesis_sink is not None:
            self._hypothesis_sink(batch, hypotheses)

    @override
    def process_metric_values(self, values: MutableMapping[str, object]) -> None:
        finalize_decoding_metrics(values)

