"""Word error rate, on the project's one WER normaliser."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import final

import editdistance
import jiwer

from fairseq2_speechmapper.datasets.text import normalize_for_wer
from fairseq2_speechmapper.scoring.errors import ScoringError, check_same_length


@final
@dataclass(frozen=True, kw_only=True)
class WerScore:
    """Corpus WER: all edit operations over all reference words, so long
    utterances weigh more than short ones (not a mean of per-utterance WERs)."""

    wer: float
    """Errors per 100 reference words (may exceed 100)."""

    num_substitutions: int

    num_deletions: int

    num_insertions: int

    num_reference_words: int

    num_utterances: int

    def metrics(self) -> dict[str, float]:
        return {"wer": self.wer}

    def info(self) -> dict[str, object]:
        return {
            "wer_normalizer": "normalize_for_wer: NFKC, lower case, punctuation removed except word-internal apostrophes",
            "num_substitutions": self.num_substitutions,
            "num_deletions": self.num_deletions,
            "num_insertions": self.num_insertions,
            "num_reference_words": self.num_reference_words,
            "num_utterances": self.num_utterances,
        }


def score_wer(hypotheses: Sequence[str], references: Sequence[str]) -> WerScore:
    """Scores ``hypotheses`` against ``references`` after
    :func:`~fairseq2_speechmapper.datasets.text.normalize_for_wer` (the same
    normaliser as stage 1's validation WER)."""
    check_same_length("WER", hypotheses=hypotheses, references=references)

    if not references:
        raise ScoringError("WER: there is no utterance to score.")

    hypotheses = [normalize_for_wer(text) for text in hypotheses]
    references = [normalize_for_wer(text) for text in references]

    output = jiwer.process_words(references, hypotheses)

    num_reference_words = output.hits + output.substitutions + output.deletions

    if num_reference_words == 0:
        raise ScoringError("WER: the references have no word after normalisation.")

    num_errors = output.substitutions + output.deletions + output.insertions

    return WerScore(
        wer=100.0 * num_errors / num_reference_words,
        num_substitutions=output.substitutions,
        num_deletions=output.deletions,
        num_insertions=output.insertions,
        num_reference_words=num_reference_words,
        num_utterances=len(references),
    )


def edit_distance(hypothesis: Sequence[Hashable], reference: Sequence[Hashable]) -> int:
    """The Levenshtein distance of two sequences (words, token ids)."""
    return int(editdistance.eval(hypothesis, reference))
