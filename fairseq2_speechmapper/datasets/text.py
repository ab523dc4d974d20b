"""Transcript normalisation before the transcript becomes LLM tokens.

The paper only says that text is normalised; ASR corpora disagree (LibriSpeech
is upper case without punctuation, Common Voice is cased and punctuated), so
the default makes them look alike and close to how an LLM writes: lower case,
single spaces, punctuation kept.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final, Literal, final

# Apostrophes stay inside words ("don't"); every other punctuation mark goes.
_PUNCTUATION: Final = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")

_SPACES: Final = re.compile(r"\s+")


@dataclass(kw_only=True)
class TextNormalizationConfig:
    lowercase: bool = True
    """Lower-case transcripts (LibriSpeech's are all upper case)."""

    remove_punctuation: bool = False
    """Remove punctuation except word-internal apostrophes."""

    unicode_form: Literal["NFC", "NFD", "NFKC", "NFKD"] | None = "NFKC"
    """The Unicode normal form applied first (``None`` to keep the text as is)."""


@final
class TextNormalizer:
    def __init__(self, config: TextNormalizationConfig) -> None:
        self._config = config

    def __call__(self, text: str) -> str:
        if self._config.unicode_form is not None:
            text = unicodedata.normalize(self._config.unicode_form, text)

        if self._config.lowercase:
            text = text.lower()

        if self._config.remove_punctuation:
            text = _PUNCTUATION.sub(" ", text)

        return _SPACES.sub(" ", text).strip()


_WER_NORMALIZER: Final = TextNormalizer(TextNormalizationConfig(lowercase=True, remove_punctuation=True))


def normalize_for_wer(text: str) -> str:
    """The normaliser used for every WER we report: lower case, punctuation
    removed except word-internal apostrophes, single spaces."""
    return _WER_NORMALIZER(text)
