from __future__ import annotations

from fairseq2_speechmapper.errors import SpeechMapperError


class ScoringError(SpeechMapperError):
    """Scoring cannot run as asked (a missing model or tokenizer, inputs of
    different lengths, an unknown language); the message is one line that says
    what to do."""


def check_same_length(what: str, **sequences: object) -> None:
    """Raises :class:`ScoringError` unless all ``sequences`` have one length;
    ``what`` names the score in the message."""
    lengths = {name: len(seq) for name, seq in sequences.items()}  # type: ignore[arg-type]

    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{length} {name}" for name, length in lengths.items())

        raise ScoringError(f"{what}: the inputs must be aligned one to one, but there are {counts}.")
