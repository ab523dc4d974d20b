from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from fairseq2.assets import AssetCardError, AssetDownloadError, AssetNotFoundError
from fairseq2.data.tokenizers import (
    TokenizerGatedError,
    TokenizerModelError,
    TokenizerNotKnownError,
)
from fairseq2.model_checkpoint import CorruptModelCheckpointError
from fairseq2.models import (
    ModelArchitectureNotKnownError,
    ModelFamilyNotKnownError,
    ModelGatedError,
    ModelNotKnownError,
)

TRACEBACK_ENV = "FAIRSEQ2_SPEECHMAPPER_TRACEBACK"


class CommandError(Exception):
    """An error the user can fix; reported as one line, without traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)

        self.exit_code = exit_code


# Errors whose message already names what is wrong (a card, a file, a field):
# one line tells the user enough, a traceback only hides it.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    AssetCardError,
    AssetDownloadError,
    CorruptModelCheckpointError,
    ModelArchitectureNotKnownError,
    ModelFamilyNotKnownError,
    ModelGatedError,
    TokenizerGatedError,
    TokenizerModelError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)

_NOT_FOUND_ERRORS: tuple[type[BaseException], ...] = (
    AssetNotFoundError,
    ModelNotKnownError,
    TokenizerNotKnownError,
)


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turns known errors into one line on stderr and an exit code: 2 for
    something not found (a card name, a command), 1 otherwise."""
    try:
        yield
    except CommandError as ex:
        _exit(str(ex), ex.exit_code)
    except _NOT_FOUND_ERRORS as ex:
        _exit(f"{ex} `fairseq2 assets list` shows the known cards.", 2)
    except _USER_ERRORS as ex:
        _exit(_one_line(ex), 1)
    except KeyboardInterrupt:
        _exit("interrupted.", 130)


def _one_line(ex: BaseException) -> str:
    message = str(ex) or type(ex).__name__

    # The cause often says which file is wrong (e.g. a missing checkpoint).
    cause = ex.__cause__
    if cause is not None and str(cause) and str(cause) not in message:
        message = f"{message} ({type(cause).__name__}: {cause})"

    return " ".join(message.split())


def _exit(message: str, exit_code: int) -> None:
    if os.environ.get(TRACEBACK_ENV):
        raise

    print(f"error: {message}", file=sys.stderr)

    sys.exit(exit_code)
