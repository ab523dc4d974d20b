"""Corpus BLEU and chrF with sacrebleu, the tokenizer chosen by the target
language as WMT and IWSLT do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, final

from sacrebleu.metrics import BLEU, CHRF

from fairseq2_speechmapper.scoring.errors import ScoringError, check_same_length

# sacrebleu's `13a` splits no CJK text into words; `zh` splits Chinese into
# characters, `ja-mecab`/`ko-mecab` into MeCab's morphemes (sacrebleu's own
# defaults for these targets).
_BLEU_TOKENIZER_OF_LANGUAGE: Final = {"zh": "zh", "ja": "ja-mecab", "ko": "ko-mecab"}

_MECAB_EXTRA: Final = {"ja-mecab": "ja", "ko-mecab": "ko"}

DEFAULT_BLEU_TOKENIZER: Final = "13a"


def base_language(lang: str) -> str:
    """``zh-CN`` -> ``zh``, ``pt_BR`` -> ``pt``, ``DE`` -> ``de``."""
    return lang.replace("_", "-").split("-")[0].lower()


def bleu_tokenizer_for(tgt_lang: str) -> str:
    """The sacrebleu tokenizer for translations into ``tgt_lang``: ``zh`` for
    Chinese, ``ja-mecab`` for Japanese, ``ko-mecab`` for Korean, ``13a``
    otherwise."""
    return _BLEU_TOKENIZER_OF_LANGUAGE.get(base_language(tgt_lang), DEFAULT_BLEU_TOKENIZER)


@final
@dataclass(frozen=True, kw_only=True)
class TranslationScore:
    bleu: float

    chrf: float

    bleu_signature: str
    """sacrebleu's signature of the BLEU settings (``nrefs:1|case:mixed|...|tok:13a|...``)."""

    chrf_signature: str

    num_segments: int

    def metrics(self) -> dict[str, float]:
        return {"bleu": self.bleu, "chrf": self.chrf}

    def info(self) -> dict[str, object]:
        return {
            "bleu_signature": self.bleu_signature,
            "chrf_signature": self.chrf_signature,
            "num_segments": self.num_segments,
        }


def score_translation(
    hypotheses: Sequence[str], references: Sequence[str], *, tgt_lang: str, bleu_tokenizer: str | None = None
) -> TranslationScore:
    """Corpus BLEU and chrF (sacrebleu's defaults: chrF with character order 6
    and no word n-grams) of ``hypotheses`` against one reference each.

    :param bleu_tokenizer: overrides :func:`bleu_tokenizer_for`; e.g. ``char``
        for Japanese or Korean without MeCab (not comparable to published
        numbers, which use MeCab).

    :raises ScoringError: if the inputs differ in length, or the tokenizer for
        Japanese or Korean is not installed.
    """
    check_same_length("BLEU/chrF", hypotheses=hypotheses, references=references)

    if not references:
        raise ScoringError("BLEU/chrF: there is no segment to score.")

    if bleu_tokenizer is None:
        bleu_tokenizer = bleu_tokenizer_for(tgt_lang)

    try:
        bleu = BLEU(tokenize=bleu_tokenizer)
    except RuntimeError:
        # sacrebleu imports MeCab only when the tokenizer is built.
        extra = _MECAB_EXTRA.get(bleu_tokenizer)

        if extra is None:
            raise

        raise ScoringError(
            f"BLEU into `{tgt_lang}` uses sacrebleu's `{bleu_tokenizer}` tokenizer, which needs MeCab: "
            f"`pip install 'sacrebleu[{extra}]'`, or pass bleu_tokenizer='char' (not comparable to published BLEU)."
        ) from None

    chrf = CHRF()

    hypotheses, refs = list(hypotheses), [list(references)]

    bleu_score = bleu.corpus_score(hypotheses, refs)
    chrf_score = chrf.corpus_score(hypotheses, refs)

    return TranslationScore(
        bleu=bleu_score.score,
        chrf=chrf_score.score,
        bleu_signature=str(bleu.get_signature()),
        chrf_signature=str(chrf.get_signature()),
        num_segments=len(references),
    )
