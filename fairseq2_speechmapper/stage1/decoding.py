"""Embedding-space decoding of stage-1 outputs: each output vector becomes its
nearest LLM vocabulary embedding (cosine; a token sharing the pad's embedding
row is the pad), pads are dropped, and the tokens are scored against the
transcript."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Final, final

import torch
from torch import Tensor

from fairseq2.data.tokenizers import TokenDecoder, Tokenizer
from fairseq2.metrics import MetricBag, Sum

from fairseq2_speechmapper.datasets.text import normalize_for_wer
from fairseq2_speechmapper.scoring.asr import edit_distance
from fairseq2_speechmapper.stage1.targets import EmbeddingTargets

# Rows of outputs compared with the whole vocabulary at once; bounds the
# (rows × vocabulary) similarity matrix.
_NEAREST_CHUNK_SIZE: Final = 1024

# Rows this close to the pad's row (1 - cosine) are the pad's row. Untrained
# tokens' rows are equal, or differ only by noise: SmolLM2's `<empty_output>`
# shares its row exactly with 10 tokens, and is within 3e-6 of 4 more and 1.4e-4
# of `\x00`, which then steal pad positions from a mapper that reaches cosine
# ~0.92 (pad accuracy 86 % instead of 100 %, TER 6.5 % instead of 0 on the
# 8-utterance overfit). A relative distance of ~4.5 % (1e-3) is still far from any
# trained token (SmolLM2's `<|endoftext|>`: 0.49 to its nearest, `\n`).
_PAD_ALIAS_COSINE_TOLERANCE: Final = 1e-3


@final
class NearestEmbeddingDecoder:
    """Maps vectors to the ids of their nearest vocabulary embeddings (cosine).

    With ``pad_idx``, every token whose embedding row is the pad's row (exactly,
    or to cosine ``1 - 1e-3``) decodes as the pad: a reserved pad token (e.g.
    SmolLM2's ``<empty_output>``, Llama 3's ``<|finetune_right_pad_id|>``) is
    untrained and shares its row with the other reserved tokens, and an argmax
    among identical rows picks the lowest id, not necessarily the pad's.
    """

    def __init__(self, embedding_table: Tensor, *, pad_idx: int | None = None) -> None:
        self._normalized_table = torch.nn.functional.normalize(embedding_table.float(), dim=-1)

        self._pad_idx = pad_idx

        self._pad_aliases: Tensor | None = None

        if pad_idx is not None:
            aliases = pad_row_aliases(embedding_table, pad_idx, normalized_table=self._normalized_table)

            aliases[pad_idx] = False

            if aliases.any():
                self._pad_aliases = aliases

    @torch.no_grad()
    def __call__(self, vectors: Tensor) -> Tensor:
        """*Shape:* :math:`(*,M)` → :math:`(*)`."""
        flat_vectors = torch.nn.functional.normalize(vectors.float().reshape(-1, vectors.size(-1)), dim=-1)

        ids = [(chunk @ self._normalized_table.T).argmax(dim=-1) for chunk in flat_vectors.split(_NEAREST_CHUNK_SIZE)]

        if not ids:
            return torch.empty(vectors.shape[:-1], dtype=torch.int64, device=vectors.device)

        nearest_ids = torch.cat(ids)

        if self._pad_aliases is not None and self._pad_idx is not None:
            nearest_ids = nearest_ids.masked_fill(self._pad_aliases[nearest_ids], self._pad_idx)

        return nearest_ids.reshape(vectors.shape[:-1])


def pad_row_aliases(embedding_table: Tensor, pad_idx: int, *, normalized_table: Tensor | None = None) -> Tensor:
    """The tokens whose embedding row is the pad's: equal to it, or at cosine
    at least ``1 - 1e-3`` (the pad itself included). *Shape:* :math:`(V,)`, bool."""
    with torch.no_grad():
        pad_row = embedding_table[pad_idx]

        aliases = (embedding_table == pad_row).all(dim=-1)

        if normalized_table is None:
            normalized_table = torch.nn.functional.normalize(embedding_table.float(), dim=-1)

        normalized_pad_row = normalized_table[pad_idx]

        # A zero pad row has no direction: only exact equality counts then.
        if bool(normalized_pad_row.any()):
            aliases |= (normalized_table @ normalized_pad_row) >= 1.0 - _PAD_ALIAS_COSINE_TOLERANCE

        return aliases


@final
class EmbeddingDecodingScorer:
    """Scores mapper outputs by embedding-space decoding: token error rate
    against the transcript's tokens, WER of the detokenized text (both
    normalised with :func:`normalize_for_wer`), and the accuracy of the nearest
    token at word and pad positions."""

    def __init__(self, nearest: NearestEmbeddingDecoder, text_decoder: TokenDecoder, pad_idx: int) -> None:
        self._nearest = nearest
        self._text_decoder = text_decoder
        self._pad_idx = pad_idx

    @staticmethod
    def add_metrics(bag: MetricBag) -> None:
        for name in (
            "token_errors",
            "num_ref_tokens",
            "word_errors",
            "num_ref_words",
            "word_token_hits",
            "num_word_tokens",
            "pad_hits",
            "num_pads",
        ):
            bag.add(name, Sum())

    @torch.no_grad()
    def update(
        self,
        bag: MetricBag,
        outputs: Tensor,
        output_lens: Sequence[int],
        targets: EmbeddingTargets,
        target_ids: Sequence[Tensor],
        texts: Sequence[str],
    ) -> list[str]:
        """Updates the decoding metrics and returns the decoded texts."""
        nearest_ids = self._nearest(outputs)

        pad_positions = (targets.word_mask | targets.pad_mask) & (targets.token_ids == self._pad_idx)

        bag.get("pad_hits", Sum).update(int((nearest_ids == self._pad_idx)[pad_positions].sum()))
        bag.get("num_pads", Sum).update(int(pad_positions.sum()))

        hypotheses = []

        nearest_ids = nearest_ids.cpu()

        for ids, output_len, ref_ids, text in zip(nearest_ids, output_lens, target_ids, texts):
            hyp_ids = ids[:output_len]

            # Position by position, over every reference token: one the output
            # has no vector for (a transcript longer than the output, which
            # the loss leaves out) is a miss.
            num_compared = min(output_len, ref_ids.numel())

            bag.get("word_token_hits", Sum).update(int((hyp_ids[:num_compared] == ref_ids[:num_compared].cpu()).sum()))
            bag.get("num_word_tokens", Sum).update(ref_ids.numel())
            hyp_ids = hyp_ids[hyp_ids != self._pad_idx]

            hypothesis = self._text_decoder(hyp_ids) if hyp_ids.numel() > 0 else ""

            hypotheses.append(hypothesis)

            bag.get("token_errors", Sum).update(edit_distance(hyp_ids.tolist(), ref_ids.tolist()))
            bag.get("num_ref_tokens", Sum).update(ref_ids.numel())

            ref_words = normalize_for_wer(text).split()
            hyp_words = normalize_for_wer(hypothesis).split()

            bag.get("word_errors", Sum).update(edit_distance(hyp_words, ref_words))
            bag.get("num_ref_words", Sum).update(len(ref_words))

        return hypotheses


def finalize_decoding_metrics(values: MutableMapping[str, object]) -> None:
    """Turns the decoding counts into rates (percent)."""

    def ratio(numerator: str, denominator: str) -> float | None:
        if numerator not in values or denominator not in values:
            return None

        num, den = float(values.pop(numerator)), float(values.pop(denominator))  # type: ignore[arg-type]

        return 100.0 * num / den if den > 0 else 0.0

    for name, numerator, denominator in (
        ("ter", "token_errors", "num_ref_tokens"),
        ("wer", "word_errors", "num_ref_words"),
        ("word_token_accuracy", "word_token_hits", "num_word_tokens"),
        ("pad_accuracy", "pad_hits", "num_pads"),
    ):
        rate = ratio(numerator, denominator)
        if rate is not None:
            values[name] = rate


def create_decoding_scorer(embedding_table: Tensor, tokenizer: Tokenizer, pad_idx: int) -> EmbeddingDecodingScorer:
    return EmbeddingDecodingScorer(
        NearestEmbeddingDecoder(embedding_table, pad_idx=pad_idx),
        tokenizer.create_decoder(skip_special_tokens=True),
        pad_idx,
    )
