"""How ``fairseq2 speechmapper`` reports errors: the project's user errors
(:class:`~fairseq2_speechmapper.errors.SpeechMapperError`) on one line with
exit code 2, like fairseq2's recipe command line does; fairseq2's own errors
about cards, checkpoints and files on one line with exit code 1 (2 for a name
that is not known). Nothing here imports torch: the error classes are looked
up only once an error is being reported."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

TRACEBACK_ENV = "FAIRSEQ2_SPEECHMAPPER_TRACEBACK"

USER_ERROR_EXIT_CODE = 2


class CommandError(Exception):
    """A wrong command line (an argument, a missing file); reported as one
    line, without traceback. A plain exception, so that argument checking
    never imports fairseq2."""

    def __init__(self, message: str, exit_code: int = USER_ERROR_EXIT_CODE) -> None:
        super().__init__(message)

        self.exit_code = exit_code


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turns known errors into one line on stderr and an exit code."""
    try:
        yield
    except CommandError as ex:
        _exit(str(ex), ex.exit_code)
    except KeyboardInterrupt:
        _exit("interrupted.", 130)
    except Exception as ex:
        exit_code = _classify(ex)
        if exit_code is None:
            raise

        # Imported only once an error is being reported (fairseq2 is heavy).
        from fairseq2_speechmapper.errors import describe_error_chain

        message = describe_error_chain(ex)

        if exit_code == USER_ERROR_EXIT_CODE and _is_not_found(ex):
            message += " `fairseq2 assets list` shows the known cards."

        _exit(message, exit_code)


def _classify(ex: Exception) -> int | None:
    """The exit code of a known error, ``None`` for a bug (a traceback)."""
    # An error of a module never imported cannot have been raised.
    errors = sys.modules.get("fairseq2_speechmapper.errors")
    if errors is not None and isinstance(ex, errors.SpeechMapperError):
        return USER_ERROR_EXIT_CODE

    if _is_not_found(ex):
        return USER_ERROR_EXIT_CODE

    if isinstance(ex, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return 1

    if "fairseq2" not in sys.modules:
        return None

    from fairseq2.assets import AssetCardError, AssetDownloadError
    from fairseq2.data.tokenizers import TokenizerGatedError, TokenizerModelError
    from fairseq2.model_checkpoint import CorruptModelCheckpointError
    from fairseq2.models import ModelArchitectureNotKnownError, ModelFamilyNotKnownError, ModelGatedError

    # Their messages already name what is wrong (a card, a file, a field).
    fairseq2_errors = (
        AssetCardError,
        AssetDownloadError,
        CorruptModelCheckpointError,
        ModelArchitectureNotKnownError,
        ModelFamilyNotKnownError,
        ModelGatedError,
        TokenizerGatedError,
        TokenizerModelError,
    )

    return 1 if isinstance(ex, fairseq2_errors) else None


def _is_not_found(ex: Exception) -> bool:
    if "fairseq2" not in sys.modules:
        return False

    from fairseq2.assets import AssetNotFoundError
    from fairseq2.data.tokenizers import TokenizerNotKnownError
    from fairseq2.models import ModelNotKnownError

    return isinstance(ex, (AssetNotFoundError, ModelNotKnownError, TokenizerNotKnownError))


def _exit(message: str, exit_code: int) -> None:
    if os.environ.get(TRACEBACK_ENV):
        raise

    print(f"error: {message}", file=sys.stderr)

    sys.exit(exit_code)


@contextmanager
def one_line_config_errors() -> Iterator[None]:
    """Reports a configuration value that cannot be structured (not one of a
    field's literal values, text for a number) on one line, as fairseq2
    reports the values that ``validate()`` rejects.

    fairseq2 0.8.1's recipe command line logs it with a traceback, and a
    recipe cannot register a handler for it (fairseq2 handles it before any
    registered handler), so the log record itself is rewritten.
    """
    record_filter = _ConfigParseErrorFilter()

    logger = logging.getLogger("fairseq2")

    logger.addFilter(record_filter)

    try:
        yield
    finally:
        logger.removeFilter(record_filter)


class _ConfigParseErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ex = record.exc_info[1] if record.exc_info else None

        if type(ex).__name__ == "RecipeConfigParseError" and not os.environ.get(TRACEBACK_ENV):
            record.msg, record.args, record.exc_info = _describe_structure_error(ex), (), None  # type: ignore[arg-type]

        return True


def _describe_structure_error(ex: BaseException) -> str:
    """``"`dataset.on_bad_sample`: Value must be ..."`` from fairseq2's chain
    of structure errors, one per field from the config's root down."""
    fields, reason = [], str(ex)

    cause = ex.__cause__
    while cause is not None:
        match = re.match(r"`(\w+)` field cannot be structured", str(cause))
        if match is not None:
            fields.append(match.group(1))

        reason = str(cause)

        cause = cause.__cause__

    if not fields:
        return f"The recipe configuration cannot be read: {reason}"

    return f"The recipe configuration is not valid: `{'.'.join(fields)}` cannot be read: {reason}"
