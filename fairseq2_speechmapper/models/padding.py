"""Padding of the model families' and speech encoders' sequences."""

from __future__ import annotations

from torch import Tensor

from fairseq2.nn import BatchLayout


def zero_padding(seqs: Tensor, seqs_layout: BatchLayout) -> Tensor:
    """Sets the padded positions of ``seqs`` to zero."""
    if not seqs_layout.padded:
        return seqs

    # `masked_fill` rather than a product, so that NaNs in padding cannot leak.
    pad_mask = seqs_layout.position_indices < 0

    return seqs.masked_fill(pad_mask.unsqueeze(-1), 0.0)
