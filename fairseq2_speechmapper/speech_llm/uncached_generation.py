"""Greedy decoding without a KV cache: the obviously-correct reference of
:func:`~fairseq2_speechmapper.speech_llm.generation.generate_from_embeddings`
that the tests check it against, and the baseline of
``benchmarks/generation.py``; not for use (it recomputes the whole batch every
step)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import Tensor
from torch.nn.functional import log_softmax

from fairseq2.models.transformer_lm import TransformerLM
from fairseq2.nn.utils.padding import pad_seqs

from fairseq2_speechmapper.speech_llm.generation import (
    GeneratedSequence,
    GenerationOptions,
    StopReason,
    _check_generation_inputs,
    embed_token_ids,
)


def generate_greedy_without_cache(
    llm: TransformerLM,
    prefixes: Sequence[Tensor],
    *,
    stop_token_ids: Collection[int],
    max_new_tokens: int,
    len_penalty: float = 1.0,
) -> list[GeneratedSequence]:
    """Greedy decoding without a KV cache: every step runs the whole
    right-padded batch of unfinished examples through the LLM and reads each
    row's logits at its own last position. Slow, and the reference of
    :func:`generate_from_embeddings`."""
    options = GenerationOptions(max_new_tokens=max_new_tokens, len_penalty=len_penalty)

    _check_generation_inputs(llm, prefixes, stop_token_ids, options)

    seqs = list(prefixes)

    generated: list[list[int]] = [[] for _ in prefixes]

    log_probs = [0.0 for _ in prefixes]

    results: list[GeneratedSequence | None] = [None for _ in prefixes]

    active = list(range(len(prefixes)))

    with torch.inference_mode():
        for step_nr in range(max_new_tokens):
            if not active:
                break

            batch, layout = pad_seqs([seqs[i] for i in active])

            hidden = llm.decoder(batch, layout)

            last_hidden = hidden[torch.arange(len(active), device=hidden.device), layout.seq_lens_pt - 1]

            lprobs = log_softmax(llm.final_proj(last_hidden).float(), dim=-1)

            next_tokens = lprobs.argmax(dim=-1)

            still_active = []

            for row, idx in enumerate(active):
                token = int(next_tokens[row])

                log_probs[idx] += float(lprobs[row, token])

                num_scored = step_nr + 1

                if token in stop_token_ids:
                    reason: StopReason = "stop"
                else:
                    generated[idx].append(token)

                    if num_scored < max_new_tokens:
                        seqs[idx] = torch.cat([seqs[idx], embed_token_ids(llm, next_tokens[row : row + 1])])

                        still_active.append(idx)

                        continue

                    reason = "length"

                score = log_probs[idx] / num_scored**len_penalty

                results[idx] = GeneratedSequence(token_ids=generated[idx], stop_reason=reason, score=score)

            active = still_active

    return [r for r in results if r is not None]
