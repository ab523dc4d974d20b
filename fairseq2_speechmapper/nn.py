"""Small tensor utilities shared by the model families and speech encoders."""

from __future__ import annotations

import torch
from torch import Tensor

from fairseq2.nn import BatchLayout


def zero_padding(seqs: Tensor, seqs_layout: BatchLayout) -> Tensor:
    """Sets the padded positions of ``seqs`` to zero."""
    if not seqs_layout.padded:
        return seqs

    # `masked_fill` rather than a product, so that NaNs in padding cannot leak.
    pad_mask = seqs_layout.position_indices < 0

    return seqs.masked_fill(pad_mask.unsqueeze(-1), 0.0)


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """Copies a host tensor to ``device`` without making the host wait for
    the accelerator: through pinned memory on CUDA (as fairseq2's
    ``to_tensor``), a plain copy elsewhere."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)

    return tensor.pin_memory().to(device, non_blocking=True)
