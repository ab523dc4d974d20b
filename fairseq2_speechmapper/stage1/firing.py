"""Stage 1's count term for a mapper that integrates and fires (not in the
paper; ``loss.count_weight``): the firing weights of each utterance should sum
to its number of outputs, the transcript's tokens plus the end position, so
that without the transcript (validation, stage 2, generation) the rounded sum
gives that many outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def fire_count_targets(target_ids: Sequence[Tensor]) -> list[int]:
    """The number of outputs each transcript asks for: its tokens plus the end
    position, where the first pad goes."""
    return [ids.numel() + 1 for ids in target_ids]


def fire_count_errors(weight_sums: Tensor, target_ids: Sequence[Tensor]) -> Tensor:
    """``|Σ weights − (tokens + 1)|`` per example (Dong & Xu's quantity loss).
    *Shape:* :math:`(N,)`."""
    counts = torch.tensor(fire_count_targets(target_ids), device=weight_sums.device, dtype=weight_sums.dtype)

    return (weight_sums - counts).abs()
