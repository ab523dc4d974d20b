"""The ``fairseq2`` console script (fairseq2 0.8.1 ships none).

``fairseq2 speechmapper COMMAND ...`` runs SpeechMapper's recipes and tools;
``fairseq2 assets list|show`` forwards to fairseq2's own asset command line.
"""

from __future__ import annotations

import os
import sys
from argparse import SUPPRESS, ArgumentParser, RawDescriptionHelpFormatter
from collections.abc import Sequence
from typing import NoReturn

from fairseq2_speechmapper.cli.errors import handle_errors
from fairseq2_speechmapper.cli.support import run_module_main

PROG = "fairseq2"


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)

    # Progress bars only where someone watches them; in logs they leave blank lines.
    if not sys.stderr.isatty():
        os.environ.setdefault("FAIRSEQ2_NO_PROGRESS", "1")

    with handle_errors():
        exit_code = _run(args)

    sys.exit(exit_code)


def _run(args: list[str]) -> int:
    groups = {
        "speechmapper": (
            "train, tune and evaluate SpeechMapper speech LLMs",
            _run_speechmapper,
        ),
        "assets": ("list and show fairseq2 asset cards", _run_assets),
    }

    parser = ArgumentParser(
        prog=PROG,
        description="fairseq2 command line, with the SpeechMapper extension.",
        formatter_class=RawDescriptionHelpFormatter,
        epilog="groups:\n"
        + "\n".join(f"  {name:<14}{summary}" for name, (summary, _) in groups.items())
        + f"\n\nRun '{PROG} GROUP --help' for the commands of a group.",
    )
    choice = _parse_choice(parser, "GROUP", list(groups), args)
    if isinstance(choice, int):
        return choice

    _, run_group = groups[choice]

    return run_group(f"{PROG} {choice}", args[1:])


def _run_speechmapper(prog: str, args: list[str]) -> int:
    from fairseq2_speechmapper.cli.commands import get_speechmapper_commands

    commands = {command.name: command for command in get_speechmapper_commands()}

    parser = ArgumentParser(
        prog=prog,
        description="SpeechMapper: pretrain a speech-to-LLM-embedding mapper without the LLM, instruction-tune it on the LLM, evaluate it.",
        formatter_class=RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {c.name:<18}{c.summary}" for c in commands.values())
        + f"\n\nRun '{prog} COMMAND --help' for the options of a command.",
    )
    choice = _parse_choice(parser, "COMMAND", list(commands), args)
    if isinstance(choice, int):
        return choice

    command = commands[choice]

    return command.run(f"{prog} {command.name}", args[1:])


def _parse_choice(parser: ArgumentParser, metavar: str, choices: list[str], args: list[str]) -> str | int:
    """Parses the first of ``args`` as one of ``choices``; returns the exit
    code instead when there is nothing to run (help, or no argument)."""
    parser.usage = f"{parser.prog} [-h] {metavar} ..."

    parser.add_argument("choice", metavar=metavar, choices=choices, help=SUPPRESS)

    if not args:
        parser.print_help(sys.stderr)

        return 2

    if args[0] in ("-h", "--help"):
        parser.print_help()

        return 0

    choice: str = parser.parse_args(args[:1]).choice

    return choice


def _run_assets(prog: str, args: list[str]) -> int:
    from fairseq2_speechmapper.cli.extension_check import check_extension

    if not args or args[0] not in ("list", "show", "-h", "--help"):
        print(
            f"usage: {prog} {{list,show}} ...\n\n"
            f"  list [--kind {{all,model,dataset,tokenizer}}]  list the asset cards fairseq2 finds\n"
            f"  show NAME                                     print a card and its base chain",
            file=sys.stderr if args[:1] != ["-h"] else sys.stdout,
        )

        return 2

    if args[0] not in ("-h", "--help"):
        check_extension()

    return run_module_main("fairseq2.assets", prog, args)
