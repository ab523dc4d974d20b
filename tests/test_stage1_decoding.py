"""Embedding-space decoding with a reserved pad token whose embedding row is
shared by other (untrained) tokens, as SmolLM2's `<empty_output>` and Llama 3's
reserved tokens are: every token with the pad's row decodes as the pad."""

from __future__ import annotations

import pytest
import torch

from fairseq2.metrics import MetricBag

from fairseq2_speechmapper.stage1 import (
    EmbeddingDecodingScorer,
    NearestEmbeddingDecoder,
    build_embedding_targets,
    create_decoding_scorer,
    finalize_decoding_metrics,
)

# Ids 0 and 1 are untrained reserved tokens sharing the pad's row (the lowest
# id wins an argmax among identical rows); 2 differs from it by noise (1 - cosine
# 1.3e-4, as SmolLM2's `\x00` from `<empty_output>`); 3, 4, 5 are words; 6 is
# the pad; 7 is a word near it (1 - cosine 2.9e-3), still a word.
PAD = 6

_RESERVED_ROW = [0.0, -1.0, 0.5]

TABLE = torch.tensor(
    [
        _RESERVED_ROW,
        _RESERVED_ROW,
        [0.0, -1.0, 0.52],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [-1.0, 0.0, 0.0],
        _RESERVED_ROW,
        [0.0, -1.0, 0.6],
    ]
)


class _CharDecoder:
    """Token 3 -> "a", 4 -> "b", 5 -> "c", 7 -> "d"; anything else would be a
    visible error."""

    def __call__(self, ids: torch.Tensor) -> str:
        return " ".join({3: "a", 4: "b", 5: "c", 7: "d"}.get(int(i), f"<{int(i)}>") for i in ids)


def test_tokens_sharing_the_pad_row_decode_as_the_pad() -> None:
    decoder = NearestEmbeddingDecoder(TABLE, pad_idx=PAD)

    # The pad's row (scaled), the words, a vector nearest to the noisy copy, and
    # the word near the pad.
    vectors = torch.tensor([[0.0, -2.0, 1.0], [1.0, 0.1, 0.0], [0.1, 1.0, 0.0], [0.0, -1.0, 0.53], [0.0, -1.0, 0.61]])

    assert decoder(vectors).tolist() == [PAD, 3, 4, PAD, 7]

    # Without a pad the argmax is left alone: the lowest of the identical ids.
    assert NearestEmbeddingDecoder(TABLE)(vectors).tolist() == [0, 3, 4, 2, 7]


def test_pad_accuracy_ter_and_text_are_right_with_a_reserved_pad() -> None:
    scorer = create_decoding_scorer(TABLE, _Tokenizer(), PAD)  # type: ignore[arg-type]

    bag = MetricBag(device=torch.device("cpu"))
    scorer.add_metrics(bag)

    target_ids = [torch.tensor([3, 4]), torch.tensor([5])]

    targets = build_embedding_targets(target_ids, output_lens=[4, 3], embedding_table=TABLE, pad_idx=PAD)

    # A perfect mapper: exactly the target embeddings.
    hypotheses = scorer.update(bag, targets.embeddings, [4, 3], targets, target_ids, ["a b", "c"])

    assert hypotheses == ["a b", "c"]

    values: dict[str, object] = {name: metric.compute().item() for name, metric in bag.metrics.items()}

    finalize_decoding_metrics(values)

    assert values["ter"] == pytest.approx(0.0)
    assert values["wer"] == pytest.approx(0.0)
    assert values["word_token_accuracy"] == pytest.approx(100.0)
    assert values["pad_accuracy"] == pytest.approx(100.0)


def test_scorer_built_by_hand_agrees() -> None:
    scorer = EmbeddingDecodingScorer(NearestEmbeddingDecoder(TABLE, pad_idx=PAD), _CharDecoder(), PAD)  # type: ignore[arg-type]

    bag = MetricBag(device=torch.device("cpu"))
    scorer.add_metrics(bag)

    target_ids = [torch.tensor([5, 3])]

    targets = build_embedding_targets(target_ids, output_lens=[3], embedding_table=TABLE, pad_idx=PAD)

    assert scorer.update(bag, targets.embeddings, [3], targets, target_ids, ["c a"]) == ["c a"]


class _Tokenizer:
    def create_decoder(self, *, skip_special_tokens: bool) -> _CharDecoder:
        return _CharDecoder()
