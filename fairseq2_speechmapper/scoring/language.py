"""Target-language adherence: the share of hypotheses written in the language
asked for. An LLM instruction-tuned on little data drifts into the wrong
language (often English, or the source language) and COMET alone hides it.

Language identification is py3langid's (langid.py's naive Bayes model over
byte n-grams, 97 languages, shipped in the package): offline, deterministic
and fast, but unreliable on a few words; restrict it to the languages a system
can plausibly output (``candidate_langs``) for short outputs.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Final, final

from fairseq2_speechmapper.scoring.errors import ScoringError
from fairseq2_speechmapper.scoring.translation import base_language

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

EMPTY_HYPOTHESIS: Final = "<empty>"
"""The "language" counted for an empty (or whitespace-only) hypothesis."""


@final
@dataclass(frozen=True, kw_only=True)
class AdherenceScore:
    adherence: float
    """The percentage of hypotheses identified as the target language."""

    tgt_lang: str
    """The target language as py3langid names it (ISO 639-1, ``zh`` for ``zh-CN``)."""

    num_adherent: int

    num_hypotheses: int

    detected_langs: dict[str, int]
    """How many hypotheses were identified as each language (``<empty>`` for
    empty ones), most frequent first: where the drift goes."""

    def metrics(self) -> dict[str, float]:
        return {"adherence": self.adherence}

    def info(self) -> dict[str, object]:
        return {"adherence_tgt_lang": self.tgt_lang, "detected_langs": self.detected_langs}


def identify_languages(texts: Sequence[str], *, candidate_langs: Sequence[str] | None = None) -> list[str]:
    """The language of each of ``texts`` (ISO 639-1), ``<empty>`` for an
    empty text.

    :param candidate_langs: the languages to choose from; all 97 by default.
    """
    identifier = _identifier(
        None if candidate_langs is None else tuple(sorted({_checked_language(lang) for lang in candidate_langs}))
    )

    return [identifier.classify(text)[0] if text.strip() else EMPTY_HYPOTHESIS for text in texts]


def score_language_adherence(
    hypotheses: Sequence[str], tgt_lang: str, *, candidate_langs: Sequence[str] | None = None
) -> AdherenceScore:
    """Scores how many ``hypotheses`` are in ``tgt_lang``; an empty
    hypothesis is not.

    :param tgt_lang: ``de``, ``zh-CN``, ``pt_BR``, ...: compared by its base
        language.
    :param candidate_langs: restricts identification to these languages
        (``tgt_lang`` is added); e.g. the source and target languages.

    :raises ScoringError: if py3langid does not know a language.
    """
    if not hypotheses:
        raise ScoringError("target-language adherence: there is no hypothesis to score.")

    lang = _checked_language(tgt_lang)

    if candidate_langs is not None:
        candidate_langs = [*candidate_langs, lang]

    detected = identify_languages(hypotheses, candidate_langs=candidate_langs)

    num_adherent = sum(1 for detected_lang in detected if detected_lang == lang)

    return AdherenceScore(
        adherence=100.0 * num_adherent / len(hypotheses),
        tgt_lang=lang,
        num_adherent=num_adherent,
        num_hypotheses=len(hypotheses),
        detected_langs=dict(Counter(detected).most_common()),
    )


def _checked_language(lang: str) -> str:
    base = base_language(lang)

    known = _full_identifier().labels

    if base not in known:
        raise ScoringError(
            f"Language identification: py3langid does not know the language `{lang}`; it knows {', '.join(sorted(known))}."
        )

    return base


@cache
def _full_identifier() -> LanguageIdentifier:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    # Loading the model takes about a second: once per process.
    return LanguageIdentifier.from_model_file(MODEL_FILE)


@cache
def _identifier(candidate_langs: tuple[str, ...] | None) -> LanguageIdentifier:
    identifier = _full_identifier()

    if candidate_langs is None:
        return identifier

    # `set_languages` rebinds the copy's arrays to column subsets; the full
    # model stays as it is.
    restricted = copy.copy(identifier)

    restricted.set_languages(list(candidate_langs))

    return restricted
