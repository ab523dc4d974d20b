"""The project's one error base: an error the user can fix (a card, a file, a
configuration value), reported on one line without a traceback."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.util import find_spec

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


class MissingExtraError(SpeechMapperError):
    """An optional part is used without the packages of its extra."""


def check_extra_installed(extra: str, part: str, modules: Sequence[str]) -> None:
    """Raises :class:`MissingExtraError`, naming the install command, unless
    ``modules`` (top-level names) are importable.

    :param extra: The extra of ``pyproject.toml`` that holds the packages
        (``comet``, ``demo``).
    :param part: What needs them, to start the message (``COMET``).
    """
    if missing := [module for module in modules if find_spec(module) is None]:
        raise MissingExtraError(
            f"{part} needs the optional packages of the `{extra}` extra ({', '.join(missing)} missing): run `pip install 'fairseq2-speechmapper[{extra}]'`."
        )


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
