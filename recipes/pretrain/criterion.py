"""The stage-1 loss: regress the mapper's output onto the LLM's embeddings of
the transcript, right-padded with the pad token's embedding.

``L = α·D_word + (10 − α)·D_pad − γ·cos`` (paper: D = MSE, α = 5, γ = 100),
where ``D_word`` covers the transcript's tokens plus the first pad (which
teaches the mapper where the content ends) and ``D_pad`` the remaining pads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, final

import torch
from torch import Tensor

CosinePositions = Literal["all", "word"]


@dataclass(kw_only=True)
class Stage1LossSection:
    name: str = "mse_cosine"
    """``mse_cosine`` (the paper's) or ``l1_cosine`` (L1 distance instead of MSE)."""

    alpha: float = 5.0
    """The weight of the word positions; the pads get ``10 - alpha``."""

    gamma: float = 100.0
    """The weight of the cosine similarity term."""

    cosine_positions: CosinePositions = "all"
    """Where the cosine term is averaged: ``all`` positions (word and pad) or
    the ``word`` positions only (the paper is ambiguous)."""


@final
@dataclass(kw_only=True)
class EmbeddingTargets:
    """What the mapper's outputs are regressed onto, aligned with them."""

    embeddings: Tensor
    """The target embeddings. *Shape:* :math:`(N,T,M)`."""

    token_ids: Tensor
    """The target token ids (the pad id on pad positions). *Shape:* :math:`(N,T)`."""

    word_mask: Tensor
    """The transcript's tokens plus the first pad. *Shape:* :math:`(N,T)`."""

    pad_mask: Tensor
    """The pads after the first one. *Shape:* :math:`(N,T)`."""

    keep: Tensor
    """``False`` for examples whose transcript does not fit the mapper's
    output; their masks are all ``False``. *Shape:* :math:`(N,)`."""

    @property
    def num_kept(self) -> int:
        return int(self.keep.sum())

    @property
    def num_skipped(self) -> int:
        return int(self.keep.numel()) - self.num_kept


def build_embedding_targets(
    target_ids: Sequence[Tensor],
    output_lens: Sequence[int],
    embedding_table: Tensor,
    pad_idx: int,
) -> EmbeddingTargets:
    """Right-pads each transcript's token ids with ``pad_idx`` to its mapper
    output length and looks their embeddings up in ``embedding_table``.

    An example whose transcript has more tokens than its mapper output has
    vectors cannot be represented; it is marked in ``keep`` and left out.
    """
    batch_size = len(target_ids)

    max_len = max(output_lens)

    device = embedding_table.device

    token_ids = torch.full((batch_size, max_len), pad_idx, dtype=torch.int64)

    word_mask = torch.zeros((batch_size, max_len), dtype=torch.bool)
    pad_mask = torch.zeros((batch_size, max_len), dtype=torch.bool)

    keep = torch.zeros((batch_size,), dtype=torch.bool)

    for i, (ids, output_len) in enumerate(zip(target_ids, output_lens)):
        num_tokens = ids.numel()

        if num_tokens > output_len:
            continue

        keep[i] = True

        token_ids[i, :num_tokens] = ids

        # The words plus the first pad, if the output has room for one.
        num_word_positions = min(num_tokens + 1, output_len)

        word_mask[i, :num_word_positions] = True
        pad_mask[i, num_word_positions:output_len] = True

    token_ids = token_ids.to(device)

    return EmbeddingTargets(
        embeddings=embedding_table[token_ids],
        token_ids=token_ids,
        word_mask=word_mask.to(device),
        pad_mask=pad_mask.to(device),
        keep=keep.to(device),
    )


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
        if not 0.0 <= alpha <= 10.0:
            raise ValueError(f"`loss.alpha` must be between 0 and 10, but is {alpha}.")

        self._distance = distance
        self._alpha = alpha
        self._gamma = gamma
        self._cosine_positions = cosine_positions

    def __call__(self, outputs: Tensor, targets: EmbeddingTargets) -> Stage1LossOutput:
        target_embeddings = targets.embeddings.to(outputs.dtype)

        distance = self._distance(outputs, target_embeddings)

        cosine = torch.cosine_similarity(outputs, target_embeddings, dim=-1)

        word_distance = _masked_mean(distance, targets.word_mask)
        pad_distance = _masked_mean(distance, targets.pad_mask)

        if self._cosine_positions == "all":
            cosine_mask = targets.word_mask | targets.pad_mask
        else:
            cosine_mask = targets.word_mask

        mean_cosine = _masked_mean(cosine, cosine_mask)

        loss = self._alpha * word_distance + (10.0 - self._alpha) * pad_distance - self._gamma * mean_cosine

        return Stage1LossOutput(
            loss=loss, word_distance=word_distance, pad_distance=pad_distance, cosine=mean_cosine
        )


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
    distance = _DISTANCES.get(section.name)
    if distance is None:
        raise ValueError(f"`loss.name` must be one of {', '.join(_DISTANCES)}, but is `{section.name}`.")

    return EmbeddingRegressionLoss(
        distance, alpha=section.alpha, gamma=section.gamma, cosine_positions=section.cosine_positions
    )
