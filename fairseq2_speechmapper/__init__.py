"""SpeechMapper for fairseq2: speech-to-LLM-embedding mappers, their recipes and
asset cards."""

from __future__ import annotations

from fairseq2_speechmapper.extension import (
    setup_fairseq2_extension as setup_fairseq2_extension,
)

__version__ = "0.1.0"
