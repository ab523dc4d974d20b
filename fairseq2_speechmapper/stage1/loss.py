"""The stage-1 loss: regress the mapper's output onto the LLM's embeddings of
the transcript, right-padded with the pad token's embedding.

``L = α·D_word + (10 − α)·D_pad − γ·cos`` (paper: D = MSE, α = 5, γ = 100),
where ``D_word`` covers the transcript's tokens plus the first pad (which
teaches the mapper where the content ends) and ``D_pad`` the remaining pads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, final

import torch
from torch import Tensor

from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.stage1.targets import EmbeddingTargets

CosinePositions = Literal["all", "word"]

Stage1LossName = Literal["mse_cosine", "l1_cosine"]


@dataclass(kw_only=True)
class Stage1LossSection:
    name: Stage1LossName = "mse_cosine"
    """``mse_cosine`` (the paper's) or ``l1_cosine`` (L1 distance instead of MSE)."""

    alpha: float = 5.0
    """The weight of the word positions; the pads get ``10 - alpha``."""

    gamma: float = 100.0
    """The weight of the cosine similarity term; ``0`` leaves it out (the
    paper's stage-2 "CE+MSE" variant)."""

    cosine_positions: CosinePositions = "all"
    """Where the cosine term is averaged: ``all`` positions (word and pad) or
    the ``word`` positions only (the paper is ambiguous)."""

    ctc_weight: float = 0.0
    """The weight of an auxiliary CTC term on the output of the mapper's
    ``ctc_block`` (:mod:`~fairseq2_speechmapper.stage1.ctc`; not in the paper);
    ``0`` leaves it out. Needs a mapper architecture with a CTC head
    (``small_ctc``)."""

    count_weight: float = 1.0
    """The weight of the count term of a mapper that integrates and fires
    (``fire_block``, e.g. ``small_cif``; :mod:`~fairseq2_speechmapper.stage1.firing`):
    ``|Σ firing weights − (tokens + 1)|``. Ignored for other mappers."""

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if self.name not in _DISTANCES:
            result.add_error(f"`name` must be one of {', '.join(_DISTANCES)}, but is `{self.name}`.")

        if not 0.0 <= self.alpha <= 10.0:
            result.add_error(f"`alpha` must be between 0 and 10, but is {self.alpha}.")

        if self.gamma < 0.0:
            result.add_error(f"`gamma` must be 0 or more, but is {self.gamma}.")

        if self.ctc_weight < 0.0:
            result.add_error(f"`ctc_weight` must be 0 or more, but is {self.ctc_weight}.")

        if self.count_weight < 0.0:
            result.add_error(f"`count_weight` must be 0 or more, but is {self.count_weight}.")

        if self.cosine_positions not in ("all", "word"):
            result.add_error(f"`cosine_positions` must be `all` or `word`, but is `{self.cosine_positions}`.")

        return result


@final
@dataclass(kw_only=True)
class Stage1LossOutput:
    """Per-example loss pieces. *Shape:* :math:`(N,)` each; zero for examples
    that are not kept."""

    loss: Tensor
    word_distance: Tensor
    pad_distance: Tensor
    cosine: Tensor


Distance = Callable[[Tensor, Tensor], Tensor]
"""Element-wise distance of outputs and targets, averaged over the embedding
dimension. *Shape:* :math:`(N,T,M)` → :math:`(N,T)`."""


def _squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs - targets).square().mean(dim=-1)


def _absolute_error(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs - targets).abs().mean(dim=-1)


@final
class EmbeddingRegressionLoss:
    """``α·D_word + (10 − α)·D_pad − γ·cos`` per example, each piece a mean
    over its positions, so every utterance weighs the same whatever its length."""

    def __init__(self, distance: Distance, *, alpha: float, gamma: float, cosine_positions: CosinePositions) -> None:
        self._distance = distance
        self._alpha = alpha
        self._gamma = gamma
        self._cosine_positions = cosine_positions

    def __call__(self, outputs: Tensor, targets: EmbeddingTargets) -> Stage1LossOutput:
        # In float32 whatever the outputs' and the table's dtypes: under bf16
        # autocast a bf16 mean over thousands of dimensions loses the loss's
        # small differences.
        outputs, target_embeddings = outputs.float(), targets.embeddings.float()

        distance = self._distance(outputs, target_embeddings)

        word_distance = _masked_mean(distance, targets.word_mask)
        pad_distance = _masked_mean(distance, targets.pad_mask)

        if self._cosine_positions == "all":
            cosine_mask = targets.word_mask | targets.pad_mask
        else:
            cosine_mask = targets.word_mask

        mean_cosine = _masked_mean(torch.cosine_similarity(outputs, target_embeddings, dim=-1), cosine_mask)

        loss = self._alpha * word_distance + (10.0 - self._alpha) * pad_distance

        # γ = 0 leaves the term out (the cosine is still reported).
        if self._gamma != 0.0:
            loss = loss - self._gamma * mean_cosine

        return Stage1LossOutput(loss=loss, word_distance=word_distance, pad_distance=pad_distance, cosine=mean_cosine)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """The mean of ``values`` over the ``True`` positions of each row; 0 for
    rows without any."""
    mask = mask.to(values.dtype)

    return (values * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)


_DISTANCES: Final[dict[str, Distance]] = {
    "mse_cosine": _squared_error,
    "l1_cosine": _absolute_error,
}


def create_stage1_loss(section: Stage1LossSection) -> EmbeddingRegressionLoss:
    """The loss ``section`` describes (checked by its ``validate``)."""
    return EmbeddingRegressionLoss(
        _DISTANCES[section.name], alpha=section.alpha, gamma=section.gamma, cosine_positions=section.cosine_positions
    )


def sum_kept_loss(output: Stage1LossOutput, targets: EmbeddingTargets) -> tuple[Tensor, int]:
    """The summed loss of the kept examples and their number; a batch with
    none gives a zero loss (and gradient) counted as one example, so that the
    trainer never divides by zero."""
    return sum_kept(output.loss, targets.keep), max(targets.num_kept, 1)


def sum_kept(values: Tensor, keep: Tensor) -> Tensor:
    """The sum of ``values`` over the kept examples, in float32. A masked sum,
    not ``values[keep]``: boolean indexing has a data-dependent shape, which
    makes the host wait for the accelerator. *Shape:* :math:`(N,)` → scalar."""
    return torch.where(keep, values.float(), 0.0).sum()
