from __future__ import annotations

from fairseq2.runtime.dependency import get_dependency_resolver

from fairseq2_speechmapper.cli.errors import CommandError
from fairseq2_speechmapper.extension import ExtensionState


def check_extension() -> None:
    """Initialises fairseq2 and fails loudly if SpeechMapper's extension did not
    register: fairseq2 itself only logs a warning, and the user then meets a
    confusing "not a known model family" much later."""
    get_dependency_resolver()

    if ExtensionState.error is not None:
        ex = ExtensionState.error

        raise CommandError(
            f"the fairseq2-speechmapper extension failed to register with fairseq2: {type(ex).__name__}: {ex} (set FAIRSEQ2_EXTENSION_TRACE=1 for the traceback).",
            exit_code=1,
        )

    if not ExtensionState.ran:
        raise CommandError(
            "the `fairseq2.extension` entry point of fairseq2-speechmapper did not run: the package is not installed in this environment (run `pip install -e .` in the repository, or install its wheel).",
            exit_code=1,
        )
