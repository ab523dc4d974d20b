"""The stage-1 targets: the LLM's embeddings of the transcript, right-padded
with the pad token's embedding to the mapper's output length."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import final

import torch
from torch import Tensor

from fairseq2_speechmapper.datasets.batch import to_device


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

    num_kept: int
    """The number of ``True`` in :attr:`keep`, counted on the host (reading it
    back from the accelerator would stall every step)."""

    num_word_positions: int
    """The number of ``True`` in :attr:`word_mask`, counted on the host."""

    @property
    def num_skipped(self) -> int:
        return self.keep.numel() - self.num_kept


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

    num_kept, total_word_positions = 0, 0

    # On the host, from host lengths; then one non-blocking copy per tensor.
    for i, (ids, output_len) in enumerate(zip(target_ids, output_lens)):
        num_tokens = ids.numel()

        if num_tokens > output_len:
            continue

        keep[i] = True

        token_ids[i, :num_tokens] = ids

        # The words plus the first pad, if the output has room for one.
        num_word_positions = min(num_tokens + 1, output_len)

        num_kept += 1

        total_word_positions += num_word_positions

        word_mask[i, :num_word_positions] = True
        pad_mask[i, num_word_positions:output_len] = True

    token_ids = to_device(token_ids, device)

    return EmbeddingTargets(
        embeddings=embedding_table[token_ids],
        token_ids=token_ids,
        word_mask=to_device(word_mask, device),
        pad_mask=to_device(pad_mask, device),
        keep=to_device(keep, device),
        num_kept=num_kept,
        num_word_positions=total_word_positions,
    )
