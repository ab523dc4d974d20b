"""What the command line's entry point (:mod:`~fairseq2_speechmapper.cli.main`)
and its commands (:mod:`~fairseq2_speechmapper.cli.commands`) share: the
command record, running an entry point that parses ``sys.argv``, and failing
with one line."""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from fairseq2_speechmapper.cli.errors import USER_ERROR_EXIT_CODE, CommandError, one_line_config_errors


@dataclass(frozen=True, kw_only=True)
class SubCommand:
    name: str
    """The sub-command's name on the command line."""

    summary: str
    """One line for the command list."""

    run: Callable[[str, list[str]], int]
    """Runs the command on its arguments (``prog``, ``args``) and returns the
    exit code."""


def run_recipe_main(prog: str, args: list[str], run: Callable[[], None]) -> int:
    """Runs a fairseq2 command-line entry point that parses ``sys.argv``."""
    with one_line_config_errors():
        return _with_argv(prog, args, run)


def run_module_main(module: str, prog: str, args: list[str]) -> int:
    """Runs ``module`` as ``python -m`` would, on ``args``."""

    def run() -> None:
        runpy.run_module(module, run_name="__main__", alter_sys=True)

    return _with_argv(prog, args, run)


def _with_argv(prog: str, args: list[str], run: Callable[[], None]) -> int:
    saved_argv = sys.argv

    sys.argv = [prog, *args]

    try:
        run()
    except SystemExit as ex:
        return _exit_code(ex)
    finally:
        sys.argv = saved_argv

    return 0


def _exit_code(ex: SystemExit) -> int:
    if ex.code is None:
        return 0

    if isinstance(ex.code, int):
        return ex.code

    print(ex.code, file=sys.stderr)

    return 1


def fail(message: str, exit_code: int = USER_ERROR_EXIT_CODE) -> NoReturn:
    raise CommandError(message, exit_code)
