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

from fairseq2_speechmapper.datasets import BadSampleError, ManifestError
from fairseq2_speechmapper.demo.errors import DemoAssetError
from fairseq2_speechmapper.embedding_table import EmbeddingTableError
from fairseq2_speechmapper.scoring import ScoringError
from fairseq2_speechmapper.recipes.pretrain.mapper_card import MapperCardError
from fairseq2_speechmapper.speech_encoders import SpeechEncoderNotSupportedError
from fairseq2_speechmapper.speech_llm import ChatTemplateError, SpeechLLMSetupError

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
    DemoAssetError,
    SpeechEncoderNotSupportedError,
    BadSampleError,
    ManifestError,
    EmbeddingTableError,
    ScoringError,
    ChatTemplateError,
    MapperCardError,
    SpeechLLMSetupError,
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
    messages = [str(ex) or type(ex).__name__]

    # fairseq2 chains errors from general to specific ("card X is erroneous" <-
    # "checkpoint F is not compatible" <- "key K has shape S"): keep them all.
    cause = ex.__cause__
    while cause is not None:
        if str(cause) and all(str(cause) not in m for m in messages):
            messages.append(str(cause))

        cause = cause.__cause__

    return " ".join(" <- ".join(messages).split())


def _exit(message: str, exit_code: int) -> None:
    if os.environ.get(TRACEBACK_ENV):
        raise

    print(f"error: {message}", file=sys.stderr)

    sys.exit(exit_code)
