"""The project's one error base: an error the user can fix (a card, a file, a
configuration value), reported on one line without a traceback."""

from __future__ import annotations

from fairseq2.recipe.error import RecipeError


class SpeechMapperError(RecipeError):
    """An error whose message tells the user what to fix.

    A :class:`~fairseq2.recipe.error.RecipeError`: fairseq2's recipe command
    line reports it on one line with exit code 2 (raise it ``from None`` or
    without a cause, else fairseq2 adds the traceback); so does
    ``fairseq2 speechmapper``'s own command line.
    """


class FileWriteError(SpeechMapperError):
    """A file could not be written (a full disk, a missing permission); no
    half-written file is left behind."""
