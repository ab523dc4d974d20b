"""What the benchmarks share: the comparison rows and their table, progress
lines, the load-average line, the common command-line options and the end of
``main``; loading a recipe preset set up for timing, the assets and corpus the
step-time benchmarks run on, in-process recipe runs and their step times, and
a recipe's own train unit stepped without fairseq2's trainer.

The benchmarks are the package ``benchmarks`` (``python -m benchmarks.NAME``
from the repository root) and import this module as ``benchmarks.common``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import time
from argparse import ArgumentParser, Namespace
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    import torch
    from torch.nn import Module

    from fairseq2.data.tokenizers import Tokenizer
    from fairseq2.datasets import DataReader
    from fairseq2.recipe.base import Recipe
    from fairseq2.trainer import TrainUnit

    from fairseq2_speechmapper.datasets import SpeechBatch
    from fairseq2_speechmapper.datasets.audio import InputPreparer
    from fairseq2_speechmapper.features import FeatureStorageSection, SpeechEncoderSection
    from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection
    from fairseq2_speechmapper.recipe_support.faults import NonFiniteStepGuard
    from fairseq2_speechmapper.recipe_support.presets import RecipePresets

MiB: Final = 2**20

ConfigT = TypeVar("ConfigT")


@dataclass
class Comparison:
    """One row of the final table: ``value / baseline = ratio``."""

    section: str
    case: str
    value_name: str
    value: float
    baseline_name: str
    baseline: float
    unit: str
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else math.nan


def log(message: str) -> None:
    """Progress goes to stderr; results to stdout."""
    print(message, file=sys.stderr, flush=True)


def load_average() -> str:
    """The load averages and the CPU count, for the last line of a report."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"
    except OSError:
        return "unknown"


def format_value(value: float, unit: str) -> str:
    if unit == "fraction":
        return f"{value:.1%}"

    if unit == "s/step":
        return f"{value:.3f} s"

    if unit == "MiB" and value < 10:
        return f"{value:.2f} MiB"

    return f"{value:,.1f} {unit}"


def print_table(rows: Sequence[Comparison], *, seconds: float) -> None:
    """Prints ``rows`` as a table, columns as wide as their longest entry."""
    values = [f"{row.value_name} {format_value(row.value, row.unit)}" for row in rows]
    baselines = [f"{row.baseline_name} {format_value(row.baseline, row.unit)}" for row in rows]

    def width(title: str, entries: Sequence[str]) -> int:
        return max([len(title), *(len(e) for e in entries)])

    section_w = width("measurement", [row.section for row in rows])
    case_w = width("case", [row.case for row in rows])
    value_w = width("value", values)
    baseline_w = width("baseline", baselines)

    header = f"{'measurement':<{section_w}} {'case':<{case_w}} {'value':>{value_w}} {'baseline':>{baseline_w}} {'ratio':>7}  note"

    print()
    print(header)
    print("-" * len(header))

    for row, value, baseline in zip(rows, values, baselines):
        print(
            f"{row.section:<{section_w}} {row.case:<{case_w}} {value:>{value_w}} {baseline:>{baseline_w}} {row.ratio:>7.3f}  {row.note}"
        )

    print(f"\nratio = value / baseline. Total {seconds:.0f} s. Load average at the end: {load_average()}.")


def add_run_options(parser: ArgumentParser, *, threads_help: str = "intra-op threads (default: 1)") -> None:
    """``--threads`` and ``--json``, which every timing benchmark takes."""
    parser.add_argument("--threads", type=int, default=1, help=threads_help)
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")


def add_timing_options(
    parser: ArgumentParser,
    *,
    warmup: tuple[int, int],
    steps: tuple[int, int],
    rounds: tuple[int, int],
    sides: str = "the recipe and the unit loops",
) -> None:
    """``--warmup``, ``--steps`` and ``--rounds`` with their defaults (without,
    with ``--quick``), then ``--threads`` and ``--json``; read them back with
    :func:`timing_options`."""

    def defaults(values: tuple[int, int]) -> str:
        full, quick = values

        return f"default: {full}" if full == quick else f"default: {full}, --quick {quick}"

    parser.add_argument("--warmup", type=int, help=f"untimed steps ({defaults(warmup)})")
    parser.add_argument("--steps", type=int, help=f"timed steps per round ({defaults(steps)})")
    parser.add_argument("--rounds", type=int, help=f"rounds in which {sides} take turns ({defaults(rounds)})")
    parser.set_defaults(timing_defaults=(warmup, steps, rounds))

    add_run_options(parser, threads_help="intra-op threads of all (default: 1, stable on a loaded 2-core machine)")


def timing_options(args: Namespace) -> dict[str, int]:
    """``num_warmup``, ``num_timed``, ``num_rounds`` and ``num_threads`` of the
    options :func:`add_timing_options` added, as keyword arguments."""
    index = 1 if args.quick else 0

    warmup, steps, rounds = (values[index] for values in args.timing_defaults)

    return {
        "num_warmup": args.warmup if args.warmup is not None else warmup,
        "num_timed": args.steps if args.steps is not None else steps,
        "num_rounds": args.rounds if args.rounds is not None else rounds,
        "num_threads": args.threads,
    }


def config_adamw(config: Any, module: Module) -> torch.optim.AdamW:
    """The AdamW of a train config's ``optimizer`` section over ``module``'s
    parameters, for :func:`run_train_unit`."""
    import torch

    from fairseq2.recipe.config import AdamWConfig

    adamw = config.optimizer.config
    if not isinstance(adamw, AdamWConfig):
        raise TypeError("run_train_unit builds AdamW only.")

    return torch.optim.AdamW(
        module.parameters(), lr=adamw.lr, betas=adamw.betas, eps=adamw.eps, weight_decay=adamw.weight_decay
    )


def write_json(file: Path | None, document: Any) -> None:
    if file is not None:
        file.write_text(json.dumps(document, indent=2), encoding="utf-8")


def report(rows: Sequence[Comparison], args: Namespace, *, start: float) -> int:
    """The end of a benchmark's ``main``: the table, then the rows to
    ``--json`` if given; returns the exit code."""
    print_table(rows, seconds=time.perf_counter() - start)

    write_json(args.json, [{**asdict(row), "ratio": row.ratio} for row in rows])

    return 0


def require_linux() -> bool:
    """Whether the peak RSS can be read from /proc; says so on stderr if not."""
    if sys.platform.startswith("linux"):
        return True

    print("This benchmark reads the peak RSS from /proc (Linux only).", file=sys.stderr)

    return False


def load_preset(recipe: Recipe, config_kls: type[ConfigT], presets: RecipePresets, preset: str) -> ConfigT:
    """Loads a train recipe's preset exactly as the recipe CLI does (fairseq2
    0.8.1 has no public API for this, hence its internal config loader)."""
    from fairseq2.composition import _register_library
    from fairseq2.recipe.cli import _RecipeConfigLoader, _swap_default_resolver
    from fairseq2.recipe.composition import _register_train_recipe
    from fairseq2.recipe.internal.config import _RecipeConfigStructurer, _StandardRecipeConfigStructurer
    from fairseq2.runtime.dependency import DependencyContainer

    container = DependencyContainer()

    with _swap_default_resolver(container):
        _register_library(container, no_progress=True)

        _register_train_recipe(container, recipe)

        container.register_type(_RecipeConfigLoader)
        container.register_type(_RecipeConfigStructurer, _StandardRecipeConfigStructurer)

        config = container.resolve(_RecipeConfigLoader).load(config_kls, presets.file(preset), [])

    if not isinstance(config, config_kls):
        raise TypeError(f"The `{preset}` preset did not load as a `{config_kls.__name__}`.")

    return config


def set_up_for_timing(config: Any, *, num_steps: int, num_threads: int) -> None:
    """A train config set up for timing: ``num_steps`` steps, no validation, no
    periodic checkpoints, metrics every step, no TensorBoard, the manifests of
    ``config.dataset.manifest_dir`` read directly (no dataset card, no
    validation split)."""
    config.dataset.name = None
    config.dataset.valid_split = None

    config.regime.num_steps = num_steps
    config.regime.validate_at_start = False
    config.regime.validate_every_n_steps = None
    config.regime.checkpoint_every_n_steps = None
    config.regime.publish_metrics_every_n_steps = 1

    config.common.metric_recorders.tensorboard.enabled = False
    config.common.torch.num_threads = num_threads


@dataclass
class Assets:
    """What the step-time and memory parts run on."""

    demo_corpus_dir: Path | None
    """The demo corpus, if the demo assets are built."""


def find_demo_corpus() -> Path | None:
    """The demo corpus directory if ``make-demo-assets`` has built the demo
    assets. Read from the demo card file rather than through
    ``ensure_demo_assets``, which would build missing parts (minutes) and
    rewrite the card file."""
    import yaml

    from fairseq2_speechmapper.asset_store.paths import get_cache_cards_dir
    from fairseq2_speechmapper.demo import DemoAssetError, wait_for_demo_assets
    from fairseq2_speechmapper.demo.builder import CARD_FILE_NAME, DEMO_CORPUS_CARD

    try:
        wait_for_demo_assets(timeout_seconds=0.0)
    except DemoAssetError:
        return None

    with (get_cache_cards_dir() / CARD_FILE_NAME).open(encoding="utf-8") as fp:
        for card in yaml.safe_load_all(fp):
            if isinstance(card, dict) and card.get("name") == DEMO_CORPUS_CARD:
                return Path(card["dataset_config"]["manifest_dir"])

    return None


def prepare_assets(work_dir: Path, *, demo_corpus_dir: Path | None) -> Assets:
    """Points the extension at a temporary cache directory holding the tiny
    assets and, if ``demo_corpus_dir`` is given, a copy of the demo cards.

    Must run before fairseq2 builds its asset store (the extension reads the
    cards directory once).
    """
    from fairseq2_speechmapper.asset_store.paths import CACHE_DIR_ENV, get_cache_cards_dir

    real_cards_dir = get_cache_cards_dir()

    cache_dir = work_dir / "cache"

    os.environ[CACHE_DIR_ENV] = str(cache_dir)

    cards_dir = get_cache_cards_dir()

    cards_dir.mkdir(parents=True)

    if demo_corpus_dir is not None:
        from fairseq2_speechmapper.demo.builder import CARD_FILE_NAME

        # The demo cards name absolute paths, so a copy works from anywhere.
        shutil.copy(real_cards_dir / CARD_FILE_NAME, cards_dir / CARD_FILE_NAME)

    from fairseq2_speechmapper.cli.tiny_assets import write_tiny_assets

    write_tiny_assets(cache_dir / "tiny", cards_dir)

    return Assets(demo_corpus_dir=demo_corpus_dir)


def write_tiny_corpus(
    corpus_dir: Path, *, num_utterances: int = 64, seed: int = 0, durations: tuple[float, float] = (1.0, 4.0)
) -> Path:
    """A ``train.jsonl`` manifest of noise WAVs lasting ``durations`` (uniform,
    seconds) with short transcripts."""
    import numpy as np
    import soundfile

    sentences = [
        "the quick brown fox",
        "transcribe the audio",
        "one two three four",
        "hello world",
        "what is said here",
        "the sea shore",
    ]

    rng = np.random.default_rng(seed)

    (corpus_dir / "audio").mkdir(parents=True)

    lines = []

    for idx in range(num_utterances):
        duration = float(rng.uniform(*durations))

        file = corpus_dir / "audio" / f"u{idx:03d}.wav"

        soundfile.write(file, rng.normal(0.0, 0.1, int(duration * 16_000)).astype(np.float32), 16_000)

        entry = {
            "id": f"u{idx:03d}",
            "audio_filepath": str(file),
            "duration": duration,
            "text": sentences[idx % len(sentences)],
        }

        lines.append(json.dumps(entry) + "\n")

    manifest = corpus_dir / "train.jsonl"

    manifest.write_text("".join(lines), encoding="utf-8")

    return manifest


def iter_batches(reader: DataReader[SpeechBatch], num_batches: int) -> Iterator[SpeechBatch]:
    """The first ``num_batches`` batches of ``reader``; then drops the reader,
    which would otherwise go on prefetching in background threads."""
    import gc

    for _ in range(num_batches):
        try:
            (batch,) = next(reader)
        except StopIteration:  # a pass's end: the trainer resets the reader there too
            reader.reset()

            (batch,) = next(reader)

        yield batch

    del reader

    gc.collect()


@contextlib.contextmanager
def _recipe_log_to(file: Path) -> Iterator[None]:
    """Sends the recipe's console log to ``file`` (fairseq2's handler binds
    to ``sys.stderr`` when the run configures logging)."""
    import logging

    with file.open("w", encoding="utf-8") as fp, contextlib.redirect_stderr(fp):
        try:
            yield
        finally:
            root = logging.getLogger()

            for handler in root.handlers[:]:
                root.removeHandler(handler)

                handler.close()


def run_extraction(
    speech_encoder: SpeechEncoderSection,
    dataset: SpeechDatasetSection,
    output_dir: Path,
    storage: FeatureStorageSection,
    *,
    num_threads: int,
) -> float:
    """Runs ``extract-features`` in-process on ``dataset``'s training split
    (its duration limits, so the utterances a recipe with ``dataset`` reads);
    returns its wall time in seconds."""
    from dataclasses import replace

    from fairseq2.recipe import run

    from fairseq2_speechmapper.recipes.extract_features.config import ExtractFeaturesConfig
    from fairseq2_speechmapper.recipes.extract_features.recipe import ExtractFeaturesRecipe

    config = ExtractFeaturesConfig(
        speech_encoder=speech_encoder, dataset=replace(dataset, valid_split=None), storage=storage
    )

    config.splits = [dataset.train_split]
    config.common.metric_recorders.tensorboard.enabled = False
    config.common.torch.num_threads = num_threads

    start = time.perf_counter()

    with _recipe_log_to(output_dir.parent / "extract.log"):
        run(ExtractFeaturesRecipe(), config, output_dir, no_rich=True)

    return time.perf_counter() - start


def run_recipe(config: object, output_dir: Path, recipe: Recipe | None = None) -> list[dict[str, Any]]:
    """Runs ``recipe`` (by default the pretrain recipe) on ``config``; returns
    its ``metrics/train.jsonl`` records."""
    from fairseq2.recipe import run

    from fairseq2_speechmapper.recipes.pretrain.recipe import PretrainRecipe

    log_file = output_dir.parent / "recipe.log"

    try:
        with _recipe_log_to(log_file):
            run(recipe or PretrainRecipe(), config, output_dir, no_rich=True)
    except BaseException:
        log(log_file.read_text(encoding="utf-8")[-4000:])

        raise

    lines = (output_dir / "metrics" / "train.jsonl").read_text(encoding="utf-8").splitlines()

    return [json.loads(line) for line in lines]


def recipe_step_times(records: Sequence[dict[str, Any]]) -> tuple[list[float], list[int]]:
    """Each step's wall time and number of examples from the recipe's train
    metrics."""
    wall = [0.0] + [float(r["Wall Time"]) for r in records]

    # A step's examples are those trained on plus those skipped as too long.
    sizes = [int(r["Batch Size"]) + int(r.get("Skipped (Transcript Too Long)", 0)) for r in records]

    return [b - a for a, b in zip(wall, wall[1:])], sizes


def open_train_reader(
    config: Any, prepare_input: InputPreparer | None, tokenizer: Tokenizer
) -> DataReader[SpeechBatch]:
    """A train recipe's training reader, opened as the recipe opens it: the
    same dataset options, seed, input preparation and text encoder, so the same
    batches in the same order."""
    import torch

    from fairseq2.gang import create_fake_gangs

    from fairseq2_speechmapper.datasets import SpeechManifestDataset, SpeechManifestDatasetConfig

    dataset = SpeechManifestDataset.from_config(SpeechManifestDatasetConfig(manifest_dir=config.dataset.manifest_dir))

    return dataset.create_reader(
        config.dataset.train_split,
        create_fake_gangs(torch.device("cpu")),
        config.dataset,
        prepare_input=prepare_input,
        encode_text=tokenizer.create_raw_encoder(),
        training=True,
        seed=config.common.seed,
    )


@dataclass(kw_only=True)
class UnitRun:
    """What :func:`run_train_unit` measured."""

    step_times: list[float]
    """Each step's seconds, fetching the batch included."""

    batch_sizes: list[int]

    first_loss: float
    """The first step's loss per target, as the recipe logs ``Loss``."""

    first_grad_norm: float


def run_train_unit(
    config: Any,
    trained: Module,
    create_unit: Callable[[NonFiniteStepGuard], TrainUnit[SpeechBatch]],
    batches: Iterable[SpeechBatch],
) -> UnitRun:
    """Steps a recipe's own train unit over ``batches`` without fairseq2's
    trainer: the unit's ``process_batch`` (the recipe's forward, loss and
    metrics), then what the trainer adds, in its plainest form: the backward
    of the loss per target, grad clipping and the config's AdamW on
    ``trained``. ``create_unit`` builds the unit around a step guard on that
    optimizer (read every step, as the recipe's is at a metric interval of 1)."""
    import torch

    from fairseq2.gang import create_fake_gangs
    from fairseq2.metrics import MetricBag

    from fairseq2_speechmapper.recipe_support.faults import NonFiniteStepGuard

    cpu = torch.device("cpu")

    optimizer = config_adamw(config, trained)

    unit = create_unit(NonFiniteStepGuard(optimizer, create_fake_gangs(cpu).root, read_at=lambda step_nr: True))

    metric_bag = MetricBag(cpu)

    unit.prepare_metric_bag(metric_bag)

    max_grad_norm = config.trainer.max_grad_norm

    run = UnitRun(step_times=[], batch_sizes=[], first_loss=math.nan, first_grad_norm=math.nan)

    iterator = iter(batches)

    for step_nr in itertools.count(1):
        start = time.perf_counter()

        batch = next(iterator, None)
        if batch is None:
            break

        unit.set_step_nr(step_nr)

        loss, num_targets = unit.process_batch(batch, metric_bag)

        # As the trainer does: gradients of the loss per target.
        (loss / num_targets).backward()

        grad_norm = torch.nn.utils.clip_grad_norm_(trained.parameters(), max_grad_norm or math.inf)

        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        run.step_times.append(time.perf_counter() - start)

        run.batch_sizes.append(batch.num_examples)

        if step_nr == 1:
            run.first_loss, run.first_grad_norm = float(loss.detach()) / num_targets, float(grad_norm)

    return run


def best_of_rounds(round_times: list[list[float]]) -> float:
    """The median over batches of each batch's fastest round: background load
    only ever adds time, so the fastest round is the best estimate of a
    batch's cost."""
    return statistics.median(min(per_round) for per_round in zip(*round_times))


def step_time_rows(
    times: dict[str, list[list[float]]],
    case: str,
    *,
    num_rounds: int,
    num_threads: int,
    compute_times: list[float],
) -> list[Comparison]:
    """The recipe against its train unit stepped without the trainer
    (:func:`run_train_unit`), with batches in memory and reading the same
    reader live; ``times[side]`` holds each round's timed step times."""
    recipe = best_of_rounds(times["recipe"])

    baselines = (
        (
            "unit",
            "unit, no trainer",
            f"median over batches of the best of {num_rounds} rounds; {num_threads} thread(s); unit: batches in memory",
        ),
        (
            "unit+reader",
            "unit+reader",
            f"unit+reader: the same reader read live; recipe compute part (median) {statistics.median(compute_times):.3f} s",
        ),
    )

    return [
        Comparison(
            section="step time",
            case=case,
            value_name="recipe",
            value=recipe,
            baseline_name=name,
            baseline=best_of_rounds(times[side]),
            unit="s/step",
            note=note,
        )
        for side, name, note in baselines
    ]
