from __future__ import annotations

from fairseq2_speechmapper.errors import SpeechMapperError


class DemoAssetError(SpeechMapperError):
    """Raised when a source of the demo assets is missing or unreadable; the
    message is one line naming the file and how to fix it."""
