"""SpeechMapper for fairseq2: speech-to-LLM-embedding mappers, their recipes and
asset cards."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fairseq2.runtime.dependency import DependencyContainer

__version__ = "0.1.0"


def setup_fairseq2_extension(container: DependencyContainer) -> None:
    """The ``fairseq2.extension`` entry point; imports fairseq2 only when
    fairseq2 calls it, so that ``import fairseq2_speechmapper`` (the command
    line's ``--help``) stays light."""
    from fairseq2_speechmapper.extension import setup_fairseq2_extension as setup

    setup(container)
