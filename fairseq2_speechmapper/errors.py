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


def describe_error_chain(ex: BaseException) -> str:
    """``ex``'s message and its causes' on one line, from general to specific.

    fairseq2 chains its errors that way ("card X is erroneous" <- "checkpoint
    F is not compatible" <- "key K has shape S"); each adds what to fix.
    """
    messages = [str(ex) or type(ex).__name__]

    cause = ex.__cause__
    while cause is not None:
        if str(cause) and all(str(cause) not in m for m in messages):
            messages.append(str(cause))

        cause = cause.__cause__

    return " ".join(" <- ".join(messages).split())
