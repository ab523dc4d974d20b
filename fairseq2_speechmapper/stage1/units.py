"""The stage-1 evaluation unit, shared by pretraining's validation and the
stage-1 evaluation: the loss pieces plus embedding-space decoding."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Protocol, final

from typing_extensions import override

from fairseq2.evaluator import EvalUnit
from fairseq2.metrics import MetricBag

from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.stage1.decoding import EmbeddingDecodingScorer, finalize_decoding_metrics
from fairseq2_speechmapper.stage1.loss import EmbeddingRegressionLoss
from fairseq2_speechmapper.stage1.metrics import add_stage1_loss_metrics, update_stage1_loss_metrics
from fairseq2_speechmapper.stage1.model import Stage1Model, TargetEmbeddings


class HypothesisSink(Protocol):
    """Receives each batch's decoded texts (e.g. to write them to a file)."""

    def __call__(self, batch: SpeechBatch, hypotheses: list[str]) -> None: ...


@final
class Stage1EvalUnit(EvalUnit[SpeechBatch]):
    """The loss pieces plus embedding-space decoding (token error rate, WER,
    word/pad token accuracy)."""

    def __init__(
        self,
        model: Stage1Model,
        targets: TargetEmbeddings,
        loss: EmbeddingRegressionLoss,
        scorer: EmbeddingDecodingScorer,
        *,
        hypothesis_sink: HypothesisSink | None = None,
    ) -> None:
        self._model = model
        self._targets = targets
        self._loss = loss
        self._scorer = scorer
        self._hypothesis_sink = hypothesis_sink

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        add_stage1_loss_metrics(metric_bag)

        self._scorer.add_metrics(metric_bag)

    @override
    def process_batch(self, batch: SpeechBatch, metric_bag: MetricBag) -> None:
        outputs, output_lens = self._model(batch)

        targets = self._targets(batch.target_ids, output_lens)

        output = self._loss(outputs, targets)

        update_stage1_loss_metrics(metric_bag, output, outputs, targets, num_bad_samples=batch.num_bad_samples)

        hypotheses = self._scorer.update(metric_bag, outputs, output_lens, targets, batch.target_ids, batch.texts)

        if self._hypothesis_sink is not None:
            self._hypothesis_sink(batch, hypotheses)

    @override
    def process_metric_values(self, values: MutableMapping[str, object]) -> None:
        finalize_decoding_metrics(values)
