"""The stage-1 pretraining recipe against baselines measured in the same run.

Run from the repository root (Linux, CPU)::

    .venv/bin/python -m benchmarks.pretrain [--quick] [--only {steps,memory,padding}] [--json FILE]

Three comparisons, each printed as ``value``, ``baseline`` and
``ratio = value / baseline`` in a table at the end (progress and per-step
details go to stderr):

1. **Step time: the recipe vs its train unit without the trainer.** fairseq2's
   trainer runs the pretrain recipe in-process (``fairseq2.recipe.run``) with
   validation and periodic checkpoints off and metrics published every step;
   its per-step time is the difference of consecutive ``Wall Time`` values in
   ``metrics/train.jsonl`` (data wait, forward/backward, grad clipping, AdamW,
   LR schedule, metric bookkeeping; the final checkpoint comes after the last
   record). The baseline steps the recipe's own ``PretrainUnit`` (its
   ``process_batch``: the model, the loss, the metrics) in a plain loop
   (``common.run_train_unit``: backward, grad clipping, the config's AdamW,
   constant LR), on the model the recipe's ``load_stage1_model`` builds, over
   the same batches: the recipe's training reader with the same options and
   seed, read in advance, so the baseline pays no data loading. A second
   baseline, ``unit+reader``, is the same loop reading that reader live (its
   decoding threads then compete for the CPU as the recipe's do), so
   ``recipe / unit+reader`` isolates the trainer's own overhead. The script
   checks that all three trained on batches of the same sizes. All: fp32, the
   same number of intra-op threads, the speech encoder run on every step
   (``cache_features_in_memory: false``, so that no step is cheaper because of
   the cache). They take turns for ``--rounds`` rounds so that all see the
   same background load; each timed batch (the steps after the first
   ``--warmup``) counts with its fastest round, since background load only
   ever adds time, and the medians over the batches are compared. Models: the
   ``demo`` preset's (Whisper tiny.en encoder with ``whisper_window:
   utterance`` → ``small`` mapper → SmolLM2-135M table, demo corpus) when the
   demo assets are built, else (and with ``--quick``) the tiny random-weight
   assets and a generated 64-utterance corpus of 1–4 s noise.
2. **Peak memory: the recipe's LLM side vs the whole LLM of the same card.**
   The recipe loads only the token-embedding table
   (``load_embedding_table``); this reuses ``embedding_memory.py`` (a fresh
   interpreter per operation, growth of its peak RSS). (a) the tiny llama card,
   both measured (at this size allocator granularity dominates); (demo)
   SmolLM2-135M, both measured (not with ``--quick``); (b) the Llama 3.1 8B
   shape: the table load measured on a sparse checkpoint (``--quick``: computed
   from shapes), the full LLM computed from its parameters on the meta device.
3. **Padding: length bucketing vs none.** The share of padded audio
   (``padding_fraction``) of the batches that ``make_length_batches`` forms
   with the ``paper`` preset's budget (640 s, at most 64 utterances, 0.5–30 s)
   and the default ``sort_window`` (2000) vs ``sort_window=1``, cut as the
   reader cuts them (shuffled, then windows of 2000); mean over 5 shuffles. On
   the demo corpus manifest (if built) and on 10,000 synthetic LibriSpeech-like
   durations: 64% normal(14.6 s, 1.8 s), 34% uniform 1–14 s, 2% uniform
   17–35 s, clipped to 1–35 s (the sample: mean 12.3 s, median 13.5 s;
   LibriSpeech train-960 averages 12.3 s, most utterances 10–17 s, the longest
   ~35 s). The reader itself, given ``sort_window=1``, would cut windows of one
   utterance and so form batches of one; the baseline here is the documented
   meaning instead: the same budget-filling batches, unsorted.

Scaled for a 2-core CPU: the demo-sized models instead of the paper's
(w2v-BERT 2.0 + 277M mapper + Llama 3.1 8B table), 3 rounds of 3 warm-up + 10
timed steps each, and one intra-op thread by default: with two, every parallel
op waits for its slower thread whenever another process holds a core, which
made steps vary 1.5–7.5 s here against ±20 % with one. About 3 minutes in
all (``--quick``: tiny models, 2 warm-up steps, 8B table computed; 30–45 s).
Timings stay sensitive to other processes; the table ends with the load average.

Nothing is written to the user's cache: the tiny assets, a copy of the demo
cards and the run's mapper card go to a temporary cache directory.
"""

from __future__ import annotations

import random
import shutil
import statistics
import sys
import tempfile
import time
from argparse import ArgumentParser
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from benchmarks.common import (
    Assets,
    Comparison,
    MiB,
    UnitRun,
    add_timing_options,
    find_demo_corpus,
    iter_batches,
    load_preset,
    log,
    open_train_reader,
    prepare_assets,
    recipe_step_times,
    report,
    require_linux,
    run_recipe,
    run_train_unit,
    set_up_for_timing,
    step_time_rows,
    timing_options,
    write_tiny_corpus,
)

if TYPE_CHECKING:
    from torch.nn import Module

    from fairseq2.data.tokenizers import Tokenizer
    from fairseq2.datasets import DataReader

    from fairseq2_speechmapper.datasets import SpeechBatch, SpeechReadOptions
    from fairseq2_speechmapper.recipes.pretrain.config import PretrainConfig
    from fairseq2_speechmapper.stage1 import Stage1Model, TargetEmbeddings

_PAPER_PRESET: Final = Path(__file__).resolve().parents[1] / "recipes" / "pretrain" / "presets" / "paper.yaml"


def _paper_read_options(*, sort_window: int | None = None) -> SpeechReadOptions:
    """The paper preset's batch budget and duration limits; ``sort_window``
    as given, else the reader's default."""
    import yaml

    from fairseq2_speechmapper.datasets import SpeechReadOptions

    section = yaml.safe_load(_PAPER_PRESET.read_text(encoding="utf-8"))["dataset"]

    keys = ("min_duration", "max_duration", "max_batch_seconds", "max_batch_size", "sort_window")

    options = SpeechReadOptions(**{k: section[k] for k in keys if k in section})

    if sort_window is not None:
        options.sort_window = sort_window

    return options


def librispeech_like_durations(num_utterances: int = 10_000, *, seed: int = 0) -> list[float]:
    """Durations (s) shaped like LibriSpeech train-960: a peak around 14–15 s,
    a flat tail of shorter utterances, a few up to 35 s."""
    rng = random.Random(seed)

    durations = []

    for _ in range(num_utterances):
        u = rng.random()

        if u < 0.64:
            d = rng.gauss(14.6, 1.8)
        elif u < 0.98:
            d = rng.uniform(1.0, 14.0)
        else:
            d = rng.uniform(17.0, 35.0)

        durations.append(min(max(d, 1.0), 35.0))

    return durations


def reader_padding_fraction(durations: Sequence[float], options: SpeechReadOptions, *, num_shuffles: int = 5) -> float:
    """The padding fraction of the batches the training reader would form:
    shuffled, cut into windows of the *default* ``sort_window``, each window
    batched by ``make_length_batches(window, options)``; the mean over
    ``num_shuffles`` seeds.

    The windows keep the default size even for ``sort_window=1``: the reader
    itself would then cut windows of one utterance, i.e. batches of one
    (no padding, no batching at all), which is not the baseline of interest.
    """
    from fairseq2_speechmapper.datasets import SpeechReadOptions, make_length_batches
    from fairseq2_speechmapper.datasets.reader import padding_fraction

    window_size = SpeechReadOptions().sort_window

    examples = [{"duration": d} for d in durations if options.min_duration <= d <= options.max_duration]

    fractions = []

    for seed in range(num_shuffles):
        shuffled = examples[:]

        random.Random(seed).shuffle(shuffled)

        batches = []

        for start in range(0, len(shuffled), window_size):
            batches.extend(make_length_batches(shuffled[start : start + window_size], options))

        fractions.append(padding_fraction(batches))

    return statistics.fmean(fractions)


def measure_padding(demo_manifest: Path | None) -> list[Comparison]:
    from fairseq2_speechmapper.datasets import read_manifest

    bucketed = _paper_read_options()
    unbucketed = _paper_read_options(sort_window=1)

    budget = f"{bucketed.max_batch_seconds:g} s, <= {bucketed.max_batch_size}/batch"

    cases: list[tuple[str, list[float]]] = []

    if demo_manifest is not None:
        manifest = read_manifest(demo_manifest, check_audio_files=False)

        cases.append((f"demo corpus ({len(manifest.records)} utt.)", [r.duration for r in manifest.records]))

    synthetic = librispeech_like_durations()

    cases.append((f"LibriSpeech-like ({len(synthetic)} utt.)", synthetic))

    rows = []

    for case, durations in cases:
        values = sorted(durations)

        log(
            f"  {case}: mean {statistics.fmean(values):.2f} s, median {statistics.median(values):.2f} s, "
            f"min {values[0]:.2f} s, max {values[-1]:.2f} s, "
            f"{sum(d > bucketed.max_duration for d in values)} over {bucketed.max_duration:g} s left out"
        )

        rows.append(
            Comparison(
                section="padding",
                case=case,
                value_name=f"sort_window={bucketed.sort_window}",
                value=reader_padding_fraction(durations, bucketed),
                baseline_name="sort_window=1",
                baseline=reader_padding_fraction(durations, unbucketed),
                unit="fraction",
                note=budget,
            )
        )

    return rows


# ---- assets ----------------------------------------------------------------------------


# ---- 1. step time ----------------------------------------------------------------------


def load_preset_config(preset: str) -> PretrainConfig:
    """Loads a pretraining preset exactly as the recipe CLI does."""
    from fairseq2_speechmapper.recipes.pretrain.config import PretrainConfig
    from fairseq2_speechmapper.recipes.pretrain.presets import PRETRAIN_PRESETS
    from fairseq2_speechmapper.recipes.pretrain.recipe import PretrainRecipe

    return load_preset(PretrainRecipe(), PretrainConfig, PRETRAIN_PRESETS, preset)


def make_step_config(assets: Assets, work_dir: Path, *, num_steps: int, num_threads: int) -> tuple[PretrainConfig, str]:
    """The demo preset (or its tiny stand-in), set up for timing: no
    validation, no periodic checkpoints, metrics every step, no feature cache."""
    config = load_preset_config("demo")

    if assets.demo_corpus_dir is not None:
        config.dataset.manifest_dir = assets.demo_corpus_dir

        label = f"demo: whisper tiny.en + {config.model.arch} mapper + SmolLM2 table"
    else:
        from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD, TINY_SPEECH_ENCODER_CARD

        write_tiny_corpus(work_dir / "tiny_corpus")

        config.dataset.manifest_dir = work_dir / "tiny_corpus"

        config.model.arch = "tiny"

        config.speech_encoder.name = TINY_SPEECH_ENCODER_CARD
        config.speech_encoder.layer = None

        config.llm.name = TINY_LLAMA_CARD

        # The demo's pad token is SmolLM2's; the tiny tokenizer's own serves.
        config.llm.pad_token = None

        # The tiny mapper has no CTC head.
        config.loss.ctc_weight = 0.0

        label = "tiny: wav2vec2 + tiny mapper + tiny llama table"

    config.speech_encoder.cache_features_in_memory = False

    set_up_for_timing(config, num_steps=num_steps, num_threads=num_threads)

    return config, label


def build_unit_model(config: PretrainConfig) -> tuple[Stage1Model, TargetEmbeddings, Tokenizer, Module]:
    """The recipe's stage-1 model built outside fairseq2's trainer: a fresh
    mapper of the same arch, and the frozen speech encoder and embedding table
    loaded by the recipe's own :func:`load_stage1_model`."""
    import torch

    from fairseq2_speechmapper.models.speechmapper import get_speechmapper_model_hub
    from fairseq2_speechmapper.stage1 import load_stage1_model

    cpu = torch.device("cpu")

    torch.manual_seed(config.common.seed)

    if config.model.config_overrides:
        raise ValueError("The unit loop builds the mapper from its arch alone; drop `model.config_overrides`.")

    hub = get_speechmapper_model_hub()

    mapper = hub.create_new_model(hub.get_arch_config(config.model.arch), device=cpu, dtype=torch.float32)

    mapper.train()

    model, targets, tokenizer = load_stage1_model(
        config.speech_encoder, config.llm, mapper=mapper, unwrapped_mapper=mapper, device=cpu
    )

    return model, targets, tokenizer, mapper


def measure_steps(
    assets: Assets, work_dir: Path, *, num_warmup: int, num_timed: int, num_rounds: int, num_threads: int
) -> list[Comparison]:
    """Runs the recipe and its train unit without the trainer (batches read in
    advance; the same reader read live) in turn, ``num_rounds`` times so that all see the same
    background load, and compares the medians of their timed steps."""
    import torch

    num_steps = num_warmup + num_timed

    config, label = make_step_config(assets, work_dir, num_steps=num_steps, num_threads=num_threads)

    log(
        f"  models: {label}; {num_threads} intra-op thread(s); {num_rounds} round(s) of {num_warmup} + {num_timed} steps"
    )

    torch.set_num_threads(num_threads)

    model, targets, tokenizer, mapper = build_unit_model(config)

    def open_reader() -> DataReader[SpeechBatch]:
        return open_train_reader(config, model.speech_encoder.prepare_input, tokenizer)

    def run_unit(batches: Iterable[SpeechBatch]) -> UnitRun:
        from fairseq2_speechmapper.recipes.pretrain.units import create_pretrain_unit
        from fairseq2_speechmapper.stage1 import create_stage1_loss

        mapper.load_state_dict(initial_mapper)

        return run_train_unit(
            config,
            mapper,
            lambda guard: create_pretrain_unit(
                model, targets, create_stage1_loss(config.loss), guard, config.loss, mapper, arch=config.model.arch
            ),
            batches,
        )

    initial_mapper = {k: v.detach().clone() for k, v in mapper.state_dict().items()}

    batches = list(iter_batches(open_reader(), num_steps))

    expected_sizes = [b.num_examples for b in batches]

    # Per variant, per round, the timed steps' seconds.
    times: dict[str, list[list[float]]] = {"recipe": [], "unit": [], "unit+reader": []}

    compute_times: list[float] = []

    timed = slice(num_warmup, None)

    for round_nr in range(num_rounds):
        # Reversing the order every other round cancels a drift of the load.
        order = ["unit", "unit+reader", "recipe"]
        if round_nr % 2 == 1:
            order.reverse()

        for which in order:
            if which == "recipe":
                records = run_recipe(config, work_dir / f"recipe_out_{round_nr}")

                # The run sets the thread count from the config; keep it so.
                torch.set_num_threads(num_threads)

                step_times, sizes = recipe_step_times(records)

                compute_times += [float(r["Compute Time"]) for r in records[timed]]
            else:
                run = run_unit(batches if which == "unit" else iter_batches(open_reader(), num_steps))

                step_times, sizes = run.step_times, run.batch_sizes

            if sizes != expected_sizes:
                raise RuntimeError(f"`{which}` trained on other batches: sizes {sizes} != {expected_sizes}.")

            times[which].append(step_times[timed])

            log(f"  round {round_nr + 1} {which:<11} s/step: {' '.join(f'{t:.2f}' for t in step_times)}")

    log(f"  {statistics.fmean(expected_sizes[timed]):.1f} utterances per timed batch")

    return step_time_rows(
        times,
        f"{label.split(':')[0]} ({num_rounds}x{num_timed} steps)",
        num_rounds=num_rounds,
        num_threads=num_threads,
        compute_times=compute_times,
    )


# ---- 2. memory -------------------------------------------------------------------------


def measure_memory(assets: Assets, work_dir: Path, *, quick: bool) -> list[Comparison]:
    import torch

    from fairseq2.models.llama import get_llama_model_hub

    from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD

    # Reused rather than duplicated: the measurement child and the sparse 8B checkpoint.
    from benchmarks.embedding_memory import _measure, _write_llama_8b_checkpoint

    rows = []

    cards = [("(a) tiny llama", TINY_LLAMA_CARD)]

    if assets.demo_corpus_dir is not None and not quick:
        cards.append(("(demo) SmolLM2-135M", "smollm2_135m_instruct"))

    for case, card in cards:
        log(f"  {case}: load_embedding_table vs load_model ...")

        table = _measure("table", card, torch.float32)
        model = _measure("model", card, torch.float32)

        rows.append(
            Comparison(
                section="peak memory",
                case=case,
                value_name="table",
                value=table["peak"] / MiB,
                baseline_name="full LLM",
                baseline=model["peak"] / MiB,
                unit="MiB",
                note=f"both measured (peak RSS growth); state-dict bytes ratio {table['bytes'] / model['bytes']:.3f}",
            )
        )

    log("  (b) Llama 3.1 8B shape ...")

    checkpoint_dir = work_dir / "llama3_1_8b_shape"

    checkpoint_dir.mkdir()

    card, llm_bytes = _write_llama_8b_checkpoint(checkpoint_dir)

    if quick:
        arch = get_llama_model_hub().get_arch_config("llama3_1_8b")

        table_bytes = float(arch.vocab_size * arch.model_dim * torch.bfloat16.itemsize)

        note = "table and LLM computed from shapes (bf16)"
    else:
        table_bytes = _measure("table", card, torch.bfloat16)["peak"]

        note = "table measured on a sparse checkpoint; LLM computed (bf16, meta)"

    shutil.rmtree(checkpoint_dir)

    rows.append(
        Comparison(
            section="peak memory",
            case="(b) Llama 3.1 8B",
            value_name="table",
            value=table_bytes / MiB,
            baseline_name="full LLM",
            baseline=llm_bytes / MiB,
            unit="MiB",
            note=note,
        )
    )

    return rows


def main() -> int:
    parser = ArgumentParser(description="The pretraining recipe against baselines measured in the same run.")
    parser.add_argument(
        "--quick", action="store_true", help="tiny models, 8B table computed, no SmolLM2 case (< 1 min)"
    )
    parser.add_argument(
        "--only", choices=("steps", "memory", "padding"), action="append", help="run only these parts (repeatable)"
    )
    add_timing_options(parser, warmup=(3, 2), steps=(10, 10), rounds=(3, 2))
    args = parser.parse_args()

    if not require_linux():
        return 1

    parts = set(args.only or ("steps", "memory", "padding"))

    start = time.perf_counter()

    rows: list[Comparison] = []

    with tempfile.TemporaryDirectory(prefix="benchmark-pretrain-") as tmp:
        work_dir = Path(tmp)

        # Looked up before the cache directory is redirected.
        demo_corpus_dir = find_demo_corpus()

        assets = None

        if parts & {"steps", "memory"}:
            assets = prepare_assets(work_dir, demo_corpus_dir=None if args.quick else demo_corpus_dir)

        if "steps" in parts and assets is not None:
            log("[step time] recipe vs its train unit without the trainer")

            rows += measure_steps(assets, work_dir, **timing_options(args))

        if "memory" in parts and assets is not None:
            log("[peak memory] embedding table vs full LLM")

            rows += measure_memory(assets, work_dir, quick=args.quick)

        if "padding" in parts:
            log("[padding] bucketed vs unbucketed batches, paper budget")

            rows += measure_padding(demo_corpus_dir / "train.jsonl" if demo_corpus_dir is not None else None)

    return report(rows, args, start=start)


if __name__ == "__main__":
    sys.exit(main())
