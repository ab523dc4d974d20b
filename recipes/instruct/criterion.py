"""The stage-2 loss: ``(1 − σ)·CE + σ·L_stage1`` (paper, "Stage 2").

CE is the mean cross-entropy of the response tokens (the instruction and the
speech are never targets); ``L_stage1`` is the stage-1 loss of the mapper's
output against the transcript's embeddings, averaged over the utterances it
can represent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

import torch
from torch import Tensor

from fairseq2.nn.functional import cross_entropy

from fairseq2_speechmapper.speech_llm import ResponseLogits
from fairseq2_speechmapper.stage1 import EmbeddingRegressionLoss, EmbeddingTargets, Stage1LossOutput, sum_kept


@final
@dataclass(kw_only=True)
class InstructLossOutput:
    loss: Tensor
    """The batch's loss times its number of response tokens (the trainer
    divides by the total number of tokens of the step)."""

    ce_sum: Tensor
    num_response_tokens: int

    num_correct_tokens: Tensor
    """A scalar tensor on the logits' device (counting it on the host would
    make the host wait for the accelerator every step)."""

    stage1: Stage1LossOutput | None
    """The stage-1 loss pieces, when ``σ > 0``."""

    stage1_keep: Tensor | None
    """The utterances whose transcript fits the mapper's output, when ``σ > 0``."""

    stage1_num_kept: int = 0
    """Their number, counted on the host."""


@final
class InstructLoss:
    def __init__(self, *, sigma: float, stage1_loss: EmbeddingRegressionLoss) -> None:
        self.sigma = sigma
        self._stage1_loss = stage1_loss

    def __call__(
        self, response: ResponseLogits, mapper_outputs: Tensor | None = None, targets: EmbeddingTargets | None = None
    ) -> InstructLossOutput:
        """:param mapper_outputs: The mapper's outputs, needed when ``σ > 0``.
        :param targets: The transcripts' embeddings aligned with them."""
        ce_sum = cross_entropy(response.logits, response.targets, pad_idx=None, reduction="sum")

        num_tokens = response.targets.numel()

        with torch.no_grad():
            num_correct = (response.logits.argmax(dim=-1) == response.targets).sum()

        loss = ce_sum * (1.0 - self.sigma)

        stage1, stage1_keep, stage1_num_kept = None, None, 0

        if self.sigma > 0.0:
            if mapper_outputs is None or targets is None:
                raise ValueError("`mapper_outputs` and `targets` must be given when `sigma` is greater than 0.")

            stage1, stage1_keep = self._stage1_loss(mapper_outputs, targets), targets.keep

            stage1_num_kept = targets.num_kept

            if targets.num_kept > 0:
                stage1_mean = sum_kept(stage1.loss, targets.keep) / targets.num_kept

                loss = loss + stage1_mean * (self.sigma * num_tokens)

        return InstructLossOutput(
            loss=loss,
            ce_sum=ce_sum.detach(),
            num_response_tokens=num_tokens,
            num_correct_tokens=num_correct,
            stage1=stage1,
            stage1_keep=stage1_keep,
            stage1_num_kept=stage1_num_kept,
        )
