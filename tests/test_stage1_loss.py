"""The stage-1 targets, loss and embedding-space decoding, against values
computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from fairseq2.metrics import MetricBag
from fairseq2.utils.validation import StandardObjectValidator, ValidationError

from fairseq2_speechmapper.stage1 import (
    EmbeddingDecodingScorer,
    NearestEmbeddingDecoder,
    Stage1LossSection,
    build_embedding_targets,
    create_stage1_loss,
    finalize_decoding_metrics,
)

PAD = 0

# Four 2-d embeddings: the pad (0) and three words on the axes.
TABLE = torch.tensor([[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


def test_targets_pad_to_output_length_with_first_pad_in_word_part() -> None:
    targets = build_embedding_targets(
        [torch.tensor([1, 2]), torch.tensor([3])], output_lens=[4, 2], embedding_table=TABLE, pad_idx=PAD
    )

    assert targets.token_ids.tolist() == [[1, 2, 0, 0], [3, 0, 0, 0]]

    # Words plus the first pad, then the remaining pads up to each output length.
    assert targets.word_mask.tolist() == [[True, True, True, False], [True, True, False, False]]
    assert targets.pad_mask.tolist() == [[False, False, False, True], [False, False, False, False]]

    assert torch.equal(targets.embeddings[0, 1], TABLE[2])
    assert torch.equal(targets.embeddings[0, 3], TABLE[PAD])

    assert targets.keep.tolist() == [True, True]


def test_transcript_longer_than_output_is_skipped_and_counted() -> None:
    targets = build_embedding_targets(
        [torch.tensor([1, 2, 3]), torch.tensor([1, 2]), torch.tensor([1])],
        output_lens=[2, 2, 3],
        embedding_table=TABLE,
        pad_idx=PAD,
    )

    assert targets.keep.tolist() == [False, True, True]
    assert targets.num_skipped == 1

    # A skipped example contributes no position; an exact fit has no pad at all.
    assert not targets.word_mask[0].any() and not targets.pad_mask[0].any()
    assert targets.word_mask[1].tolist() == [True, True, False]
    assert not targets.pad_mask[1].any()


def test_paper_loss_matches_hand_computation() -> None:
    targets = build_embedding_targets([torch.tensor([1])], output_lens=[3], embedding_table=TABLE, pad_idx=PAD)

    # Position 0: word 1 = (1, 0); 1: first pad (0, -1); 2: pad (0, -1).
    outputs = torch.tensor([[[1.0, 1.0], [0.0, -1.0], [2.0, 0.0]]])

    loss = create_stage1_loss(Stage1LossSection(alpha=5.0, gamma=100.0, cosine_positions="all"))

    output = loss(outputs, targets)

    # Squared error averaged over the 2 dims: pos0 (0 + 1) / 2 = 0.5, pos1 0, pos2 (4 + 1) / 2 = 2.5.
    mse_word = (0.5 + 0.0) / 2
    mse_pad = 2.5
    # Cosines: pos0 1/sqrt(2), pos1 1, pos2 0.
    cosine = (1 / math.sqrt(2) + 1.0 + 0.0) / 3

    assert output.word_distance.item() == pytest.approx(mse_word)
    assert output.pad_distance.item() == pytest.approx(mse_pad)
    assert output.cosine.item() == pytest.approx(cosine)
    assert output.loss.item() == pytest.approx(5 * mse_word + 5 * mse_pad - 100 * cosine)

    word_only = create_stage1_loss(Stage1LossSection(alpha=7.0, gamma=1.0, cosine_positions="word"))(outputs, targets)

    word_cosine = (1 / math.sqrt(2) + 1.0) / 2

    assert word_only.loss.item() == pytest.approx(7 * mse_word + 3 * mse_pad - word_cosine)


def test_l1_loss_uses_absolute_error() -> None:
    targets = build_embedding_targets([torch.tensor([1])], output_lens=[2], embedding_table=TABLE, pad_idx=PAD)

    outputs = torch.tensor([[[3.0, 0.0], [0.0, -2.0]]])

    output = create_stage1_loss(Stage1LossSection(name="l1_cosine", gamma=0.0))(outputs, targets)

    # Both positions are word positions (the word and the first pad): |2| / 2 and |1| / 2.
    assert output.word_distance.item() == pytest.approx((1.0 + 0.5) / 2)
    assert output.pad_distance.item() == 0.0


def test_unknown_loss_and_bad_alpha_are_refused_by_validation() -> None:
    validator = StandardObjectValidator()

    with pytest.raises(ValidationError, match="`name` must be one of mse_cosine, l1_cosine, but is `ctc`"):
        validator.validate(Stage1LossSection(name="ctc"))  # type: ignore[arg-type]

    with pytest.raises(ValidationError, match="`alpha` must be between 0 and 10"):
        validator.validate(Stage1LossSection(alpha=11.0))

    validator.validate(Stage1LossSection())


def test_loss_gradient_only_flows_through_kept_examples() -> None:
    targets = build_embedding_targets(
        [torch.tensor([1, 2, 3]), torch.tensor([2])], output_lens=[2, 2], embedding_table=TABLE, pad_idx=PAD
    )

    outputs = torch.randn(2, 2, 2, requires_grad=True)

    output = create_stage1_loss(Stage1LossSection())(outputs, targets)

    output.loss[targets.keep].sum().backward()

    assert outputs.grad is not None
    assert outputs.grad[0].abs().sum() == 0.0
    assert outputs.grad[1].abs().sum() > 0.0


class _CharDecoder:
    """Decodes ids 1-3 as the words ``a``/``b``/``c``."""

    def __call__(self, ids: torch.Tensor) -> str:
        return " ".join("abc"[i - 1] for i in ids.tolist())


def test_nearest_embedding_decoding_scores_tokens_and_words() -> None:
    scorer = EmbeddingDecodingScorer(NearestEmbeddingDecoder(TABLE), _CharDecoder(), PAD)  # type: ignore[arg-type]

    bag = MetricBag(device=torch.device("cpu"))
    scorer.add_metrics(bag)

    target_ids = [torch.tensor([1, 2]), torch.tensor([3])]

    targets = build_embedding_targets(target_ids, output_lens=[4, 2], embedding_table=TABLE, pad_idx=PAD)

    # Example 0 decodes to 1, 3, pad, 2 -> "a c b" (one substitution, one insertion);
    # example 1 to 3, pad -> "c" (exact). Scaled vectors: only the direction counts.
    outputs = torch.tensor(
        [
            [[5.0, 0.1], [-3.0, 0.1], [0.0, -2.0], [0.2, 0.9]],
            [[-1.0, 0.0], [0.1, -1.0], [0.0, 0.0], [0.0, 0.0]],
        ]
    )

    hypotheses = scorer.update(bag, outputs, [4, 2], targets, target_ids, ["A b", "c"])

    assert hypotheses == ["a c b", "c"]

    values: dict[str, object] = {name: metric.compute().item() for name, metric in bag.metrics.items()}

    finalize_decoding_metrics(values)

    # Tokens: ref [1, 2] vs hyp [1, 3, 2]: 1 edit; ref [3] vs [3]: 0 -> 1 / 3.
    assert values["ter"] == pytest.approx(100 * 1 / 3)
    # Words (normalised, case-insensitive): "a b" vs "a c b": 1 edit of 3 words.
    assert values["wer"] == pytest.approx(100 * 1 / 3)
    # Word positions: 1 (hit), 2 (miss: 3), 3 (hit) -> 2 / 3.
    assert values["word_token_accuracy"] == pytest.approx(100 * 2 / 3)
    # Pads: example 0 positions 2 (hit), 3 (miss); example 1 position 1 (hit) -> 2 / 3.
    assert values["pad_accuracy"] == pytest.approx(100 * 2 / 3)
