"""Stage 1's auxiliary CTC term (not in the paper; ``loss.ctc_weight``).

The paper's objective asks output position ``i`` for the ``i``-th token: the
mapper must learn both what the audio says and how to move it to the front,
from a regression signal alone. CTC on an earlier block's output teaches the
first part in time order, where the audio is; the later blocks are left to
compact it. The vocabulary scored is the batch's own tokens plus the blank (a
sampled softmax): scoring SmolLM2's 49,152 rows at 12.5 Hz would cost more
than the rest of the step on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import torch
from torch import Tensor
from torch.nn.functional import ctc_loss, log_softmax

from fairseq2.nn import BatchLayout

from fairseq2_speechmapper.models.speechmapper import SpeechMapper


@final
class BatchVocabularyCTCLoss:
    """Per-example CTC loss of the mapper's CTC states against the transcript's
    token ids, over the batch's tokens and the blank, divided by the number of
    tokens (so long and short utterances weigh the same)."""

    def __init__(self, embedding_table: Tensor) -> None:
        self._embedding_table = embedding_table

    def __call__(self, mapper: SpeechMapper, target_ids: Sequence[Tensor]) -> Tensor:
        if mapper.ctc_head is None:
            raise ValueError("The mapper has no CTC head.")

        states, layout = mapper.pop_ctc_states()

        return self.compute(mapper, states, layout, target_ids)

    def compute(
        self, mapper: SpeechMapper, states: Tensor, layout: BatchLayout, target_ids: Sequence[Tensor]
    ) -> Tensor:
        assert mapper.ctc_head is not None

        device = states.device

        targets = [ids.to(device) for ids in target_ids]

        # The batch's vocabulary; its size depends on the data, which costs one
        # host read per step (a GPU run would use a fixed sampled vocabulary).
        vocab = torch.unique(torch.cat(targets))

        logits = mapper.ctc_head.logits(states, self._embedding_table[vocab])

        # (N, S, V + 1) -> (S, N, V + 1), as ctc_loss wants; float32 for the
        # log-sum-exp over long paths.
        log_probs = log_softmax(logits.float(), dim=-1).transpose(0, 1)

        local_targets = torch.cat([torch.searchsorted(vocab, ids) for ids in targets])

        target_lens = torch.tensor([ids.numel() for ids in targets], device=device)

        input_lens = torch.tensor(layout.seq_lens, device=device)

        # Infinite where a transcript does not fit its states: those give 0,
        # as the regression term leaves them out too.
        losses = ctc_loss(
            log_probs,
            local_targets,
            input_lens,
            target_lens,
            blank=vocab.numel(),
            reduction="none",
            zero_infinity=True,
        )

        return losses / target_lens.clamp(min=1)
