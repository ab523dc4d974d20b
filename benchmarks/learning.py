"""Does the whole chain learn, on speech it never saw?

Run from the repository root (CPU; hours on 2 cores, resumable)::

    .venv/bin/python -m benchmarks.learning [--corpus natural|large] [--output-dir DIR]
        [--steps N N N] [--it-steps N] [--train-split SPLIT] [--rows ROW ...] [--quick]
    .venv/bin/python -m benchmarks.learning --compare DIR DIR ...   # one table and plot of several runs

Everything goes through the command line a user runs, on the real small models
(Whisper tiny.en's encoder, SmolLM2-135M-Instruct) and a spoken corpus whose
``test`` split has sentences *and* voices that ``train`` never has: the
natural corpus (``make-demo-assets --natural-corpus``: WordNet's example
sentences, ~20 h; ``--train-split train_2h`` or ``train_8h`` for the steps of
a data-scaling curve) or the template-grammar large corpus (~2.5 h).

The rows (``--rows``, all by default), as in the paper's tables, with the
peer baseline:

- ``untrained``: the mapper as initialised, attached to the frozen LLM;
- ``stage1_only``: each stage-1 budget attached to the frozen LLM, no
  instruction tuning (the paper's zero-shot row);
- ``it_only``: the same mapper architecture from its initialisation, tuned
  through the frozen LLM with the same IT budget (how end-to-end connectors
  train);
- ``slam``: SLAM-ASR's connector (``slam_asr_small``: stacked frames, a 2-layer
  MLP) trained end to end through the frozen LLM for as many CPU minutes as
  the largest stage-1 budget plus its IT took;
- ``stage1_it``: each stage-1 budget, then the IT budget.

Whisper tiny.en's own decoder transcribes the same test split: its WER is the
line of what the features allow. Minutes are CPU minutes (user + system time
of the commands), so a loaded machine does not inflate them.

1. ``extract-features``: Whisper runs once over train, dev and test.
2. ``pretrain`` (the ``demo`` preset, on the corpus' cached features): one run
   whose checkpoints at ``--steps`` are the stage-1 budgets (the schedule spans
   the longest one); each budget is reported with the minutes it took.
3. Per budget (and, with ``--it-without-stage1``, for the untrained mapper:
   what instruction tuning alone achieves):
   - ``evaluate --stage1`` on ``test``: embedding-space decoding (token error
     rate, word-token accuracy, output/target norm ratio), against the best
     text-only guess: the most frequent training token at every word position,
     or the most frequent one at each position, whichever scores higher;
   - ``instruct`` (the ``demo`` preset, ``--it-steps`` steps) from that
     mapper: the response-token accuracy on ``dev``;
   - ``evaluate`` of the tuned speech LLM on ``test``: WER, and the WER of the
     same hypotheses against the references of *other* utterances (shuffled).
     Fluent text that ignores the audio scores the same on both; the gap is
     what the audio contributed.
   The untrained mapper is also evaluated without tuning: the untrained chain.
4. A table (stdout and ``DIR/learning.md``), the numbers (``DIR/learning.json``)
   and the curves (``DIR/learning.png``).

Every phase keeps its outputs: run the same command again to resume after a
kill, or to add budgets. ``--quick`` runs a miniature of the whole on the small
demo corpus (a few minutes; the smoke test).
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from argparse import ArgumentParser, Namespace
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fairseq2_speechmapper.demo.large_corpus import LARGE_CORPUS_CARD
from fairseq2_speechmapper.demo.natural_corpus import NATURAL_CORPUS_CARD

from benchmarks.learning_report import ROW_TITLES, ROWS, ChainRow, compare, format_table, plot

REPO_DIR = Path(__file__).resolve().parent.parent

VENV_BIN = Path(sys.executable).parent


@dataclass(kw_only=True)
class Setup:
    corpus_card: str
    train_split: str
    dev_split: str
    test_split: str
    steps: list[int]
    it_steps: int
    feature_cache: Path
    it_budgets: list[int] = field(default_factory=list)
    """The stage-1 budgets that are instruction-tuned (all when empty)."""

    stage1_config: list[str] = field(default_factory=list)
    instruct_config: list[str] = field(default_factory=list)
    evaluate_config: list[str] = field(default_factory=list)

    stage1_chain: bool = True
    """Whether the ``stage1_only`` row also has the frozen LLM transcribe
    the test split after the largest budget (minutes of generation)."""


def run_dir(work_dir: Path, name: str) -> Path:
    """The output directory of one run. The recipes name the cards they write
    after it, so it carries the benchmark directory's name: two benchmark
    directories never share a card."""
    return work_dir / f"{work_dir.name}_{name}"


def log(message: str) -> None:
    print(f"[learning {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cli(*args: str, log_file: Path, phase: str | None = None, work_dir: Path | None = None) -> None:
    """Runs ``fairseq2 speechmapper ARGS``; its output goes to ``log_file``.
    With ``phase``, the command's CPU seconds are added to its entry in
    ``work_dir/cpu_seconds.json`` (kept across resumes)."""
    command = [str(VENV_BIN / "fairseq2"), "speechmapper", *args, "--no-rich"]

    log(" ".join(command[1:]))

    log_file.parent.mkdir(parents=True, exist_ok=True)

    before = resource.getrusage(resource.RUSAGE_CHILDREN)

    with log_file.open("a", encoding="utf-8") as fp:
        result = subprocess.run(command, stdout=fp, stderr=subprocess.STDOUT, env=os.environ)

    after = resource.getrusage(resource.RUSAGE_CHILDREN)

    if phase is not None and work_dir is not None:
        seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

        add_cpu_seconds(work_dir, phase, seconds)

    if result.returncode != 0:
        tail = log_file.read_text(encoding="utf-8").splitlines()[-5:]

        raise SystemExit(
            f"`{' '.join(command[1:4])}` failed (exit {result.returncode}); see {log_file}:\n" + "\n".join(tail)
        )


def add_cpu_seconds(work_dir: Path, phase: str, seconds: float) -> None:
    ledger_file = work_dir / "cpu_seconds.json"

    ledger = json.loads(ledger_file.read_text(encoding="utf-8")) if ledger_file.exists() else {}

    ledger[phase] = ledger.get(phase, 0.0) + seconds

    ledger_file.write_text(json.dumps(ledger, indent=2), encoding="utf-8")


def cpu_minutes(work_dir: Path, phase: str) -> float:
    """The CPU minutes of ``phase``; NaN if it ran before they were counted."""
    ledger_file = work_dir / "cpu_seconds.json"

    ledger = json.loads(ledger_file.read_text(encoding="utf-8")) if ledger_file.exists() else {}

    return float(ledger[phase]) / 60.0 if phase in ledger else math.nan


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prepare_assets(setup: Setup, hours: float | None) -> Path:
    """Builds the demo assets and the corpus (once, in the user's cache), as
    the demo presets do on first use, and returns the corpus' manifest
    directory."""
    from fairseq2_speechmapper.asset_store.paths import get_cache_dir
    from fairseq2_speechmapper.demo import make_demo_assets, make_large_corpus
    from fairseq2_speechmapper.demo.natural_corpus import DEFAULT_HOURS, build_natural_corpus

    log("demo assets and the corpus (built the first time)")

    assets = make_demo_assets(get_cache_dir())

    # Whisper tiny.en loads through fairseq2's `hg` family, offline; inherited
    # by every command below.
    os.environ.update(assets.hf_env)

    if setup.corpus_card == LARGE_CORPUS_CARD:
        return make_large_corpus()

    if setup.corpus_card == NATURAL_CORPUS_CARD:
        return build_natural_corpus(hours=DEFAULT_HOURS if hours is None else hours)[0]

    return assets.corpus_dir


def extract_features(setup: Setup, work_dir: Path) -> None:
    splits = f"[{setup.train_split},{setup.dev_split},{setup.test_split}]"

    # Resumable: finished shards are kept; splits already there are skipped.
    cli(
        "extract-features", str(setup.feature_cache), "--config",
        "speech_encoder.name=whisper_tiny_en_encoder", "speech_encoder.layer=null",
        "speech_encoder.whisper_window=utterance", f"dataset.name={setup.corpus_card}",
        f"splits={splits}", "dataset.num_parallel_calls=2",
        log_file=work_dir / "logs" / "extract.log", phase="extract_features", work_dir=work_dir,
    )  # fmt: skip


def pretrain(setup: Setup, work_dir: Path) -> Path:
    stage1_dir = run_dir(work_dir, "stage1")

    last_step = max(setup.steps)

    if not (stage1_dir / "checkpoints" / f"step_{last_step}").exists():
        cli(
            "pretrain", str(stage1_dir), "--config",
            f"dataset.feature_cache={setup.feature_cache}", f"dataset.name={setup.corpus_card}",
            f"dataset.train_split={setup.train_split}", f"dataset.valid_split={setup.dev_split}",
            f"regime.num_steps={last_step}", "regime.validate_at_start=false",
            f"regime.validate_every_n_steps={min(setup.steps)}", f"regime.checkpoint_every_n_steps={min(setup.steps)}",
            "regime.keep_last_n_checkpoints=null", *setup.stage1_config,
            log_file=work_dir / "logs" / "stage1.log", phase="stage1", work_dir=work_dir,
        )  # fmt: skip

    return stage1_dir


def write_budget_card(stage1_dir: Path, step: int, name: str) -> str:
    """The pretraining run's mapper card under another name, naming its
    checkpoint at ``step``, so that each budget is loaded by the real card path."""
    import yaml

    from fairseq2.assets import AssetCard

    from fairseq2_speechmapper.asset_store.mapper_card import MapperCard
    from fairseq2_speechmapper.asset_store.paths import default_mapper_card_name, get_cache_cards_dir

    run_card_name = default_mapper_card_name(stage1_dir)

    run_card_file = get_cache_cards_dir() / f"{run_card_name}.yaml"

    card = MapperCard.read(AssetCard(run_card_name, yaml.safe_load(run_card_file.read_text(encoding="utf-8"))))

    checkpoint = stage1_dir / "checkpoints" / f"step_{step}" / "model"
    if not checkpoint.exists():
        raise SystemExit(f"{checkpoint} is missing; was the pretraining run's checkpoint kept?")

    card.name = name

    card.write(checkpoint, trained_steps=step)

    return name


def untrained_mapper_card(setup: Setup, work_dir: Path, feature_cache: Path, arch: str | None = None) -> str:
    """A mapper as initialised (the stage-1 configuration's, or ``arch``): one
    pretraining step at learning rate 0."""
    name = "untrained" if arch is None else f"untrained_{arch}"

    init_dir = run_dir(work_dir, f"stage1_{name}")

    arch_config = [] if arch is None else [f"model.arch={arch}", "loss.ctc_weight=0"]

    if not (init_dir / "checkpoints" / "step_1").exists():
        cli(
            "pretrain", str(init_dir), "--config",
            f"dataset.feature_cache={feature_cache}", f"dataset.name={setup.corpus_card}",
            f"dataset.train_split={setup.train_split}", f"dataset.valid_split={setup.dev_split}",
            "regime.num_steps=1", "regime.validate_at_start=false", "regime.validate_every_n_steps=1",
            "regime.checkpoint_every_n_steps=1", "regime.publish_metrics_every_n_steps=1",
            *setup.stage1_config, *arch_config, "optimizer.config.lr=0.0", "lr_scheduler.config.num_warmup_steps=0",
            log_file=work_dir / "logs" / f"stage1_{name}.log", phase=f"stage1_{name}", work_dir=work_dir,
        )  # fmt: skip

    return write_budget_card(init_dir, 1, f"speechmapper_{work_dir.name}_{name}")


def stage1_share(stage1_dir: Path, step: int) -> float:
    """The share of the pretraining run's wall time spent up to ``step``, by
    which its CPU minutes are divided among the budgets."""
    entries = read_jsonl(stage1_dir / "metrics" / "train.jsonl")

    total = float(entries[-1]["Wall Time"])

    for entry in entries:
        if entry["Step"] >= step:
            return float(entry["Wall Time"]) / total

    return float("nan")


def evaluate_stage1(setup: Setup, work_dir: Path, card: str, name: str) -> dict[str, Any]:
    eval_dir = work_dir / name

    metrics_file = eval_dir / "metrics" / "eval.jsonl"

    if not metrics_file.exists():
        cli(
            "evaluate", str(eval_dir), "--stage1", "--config", f"model.name={card}",
            f"dataset.name={setup.corpus_card}", f"dataset.valid_split={setup.test_split}",
            log_file=work_dir / "logs" / f"{name}.log", phase=name, work_dir=work_dir,
        )  # fmt: skip

    return read_jsonl(metrics_file)[-1]


def instruct(
    setup: Setup, work_dir: Path, feature_cache: Path, card: str, name: str, num_steps: int | None = None
) -> tuple[Path, float]:
    it_dir = run_dir(work_dir, name)

    num_steps = num_steps or setup.it_steps

    if not (it_dir / "checkpoints" / f"step_{num_steps}").exists():
        cli(
            "instruct", str(it_dir), "--mapper", card, "--config",
            f"dataset.feature_cache={feature_cache}", f"dataset.name={setup.corpus_card}",
            f"dataset.train_split={setup.train_split}", f"dataset.valid_split={setup.dev_split}",
            f"regime.num_steps={num_steps}", f"regime.validate_every_n_steps={num_steps}",
            f"regime.checkpoint_every_n_steps={num_steps}", *setup.instruct_config,
            log_file=work_dir / "logs" / f"{name}.log", phase=name, work_dir=work_dir,
        )  # fmt: skip

    valid = read_jsonl(it_dir / "metrics" / "valid.jsonl")

    return it_dir, 100.0 * float(valid[-1]["Accuracy"])


def evaluate_chain(setup: Setup, work_dir: Path, feature_cache: Path, model: str, name: str) -> list[dict[str, Any]]:
    """Generates over the test split and returns its hypothesis records."""
    eval_dir = work_dir / name

    if not (eval_dir / "scores.json").exists():
        cli(
            "evaluate", str(eval_dir), "--model", model, "--config",
            f"dataset.feature_cache={feature_cache}", f"dataset.name={setup.corpus_card}",
            f"dataset.valid_split={setup.test_split}", *setup.evaluate_config,
            log_file=work_dir / "logs" / f"{name}.log", phase=name, work_dir=work_dir,
        )  # fmt: skip

    records = []
    for file in sorted((eval_dir / "hypotheses").glob(f"{setup.test_split}.rank_*.jsonl")):
        records.extend(read_jsonl(file))

    return sorted(records, key=lambda record: record["id"])


def reference_of(record: dict[str, Any]) -> str:
    references = record["references"]

    return references[0] if isinstance(references, list) else str(references)


def chain_wers(records: list[dict[str, Any]]) -> tuple[float, float]:
    """The WER of the hypotheses against their references and against the
    references of other utterances (each moved by half the list, so no
    hypothesis keeps its own)."""
    from fairseq2_speechmapper.scoring.asr import score_wer

    hypotheses = [record["hypothesis"] for record in records]
    references = [reference_of(record) for record in records]

    half = len(references) // 2
    shuffled = references[half:] + references[:half]

    return score_wer(hypotheses, references).wer, score_wer(hypotheses, shuffled).wer


def transcript_tokens(*splits: list[dict[str, Any]]) -> list[list[list[int]]]:
    """The transcripts of each split's records as SmolLM2's tokens: the
    targets (one tokenizer for all)."""
    from fairseq2.data.tokenizers import load_tokenizer

    encode = load_tokenizer("smollm2_135m_instruct").create_raw_encoder()

    return [[encode(record["text"]).tolist() for record in records] for records in splits]


def frequent_token_baseline(train_tokens: list[list[int]], test_tokens: list[list[int]]) -> dict[str, float]:
    """What a mapper that ignores the audio gets at word positions: the most
    frequent training token everywhere, or the most frequent one at each
    position."""
    overall = Counter(token for tokens in train_tokens for token in tokens)

    most_frequent = overall.most_common(1)[0][0]

    by_position: dict[int, Counter[int]] = {}
    for tokens in train_tokens:
        for position, token in enumerate(tokens):
            by_position.setdefault(position, Counter())[token] += 1

    num_tokens = sum(len(tokens) for tokens in test_tokens)

    global_hits = sum(token == most_frequent for tokens in test_tokens for token in tokens)

    positional_hits = sum(
        token == by_position[position].most_common(1)[0][0]
        for tokens in test_tokens
        for position, token in enumerate(tokens)
        if position in by_position
    )

    return {
        "most_frequent_token": 100.0 * global_hits / num_tokens,
        "most_frequent_token_per_position": 100.0 * positional_hits / num_tokens,
    }


def token_coverage(train_tokens: list[list[int]], test_tokens: list[list[int]]) -> dict[str, float]:
    """The share of test tokens that training has at least 1, 5 and 20 times:
    on an open vocabulary, how much a mapper could have learned of each
    token grows with the hours of speech (a data-scaling curve's x axis in
    words)."""
    counts = Counter(token for tokens in train_tokens for token in tokens)

    num_tokens = sum(len(tokens) for tokens in test_tokens)

    return {
        f"seen_{times}": 100.0 * sum(counts[token] >= times for tokens in test_tokens for token in tokens) / num_tokens
        for times in (1, 5, 20)
    }


def whisper_limit(manifest_dir: Path, setup: Setup) -> dict[str, Any]:
    """Whisper tiny.en's own WER on the test split (encoder and decoder, greedy):
    what the features allow. Kept beside the corpus' manifests, for every run
    on the corpus (a rebuilt corpus loses it)."""
    limit_file = manifest_dir / f"whisper_tiny_en_{setup.test_split}.json"

    if limit_file.exists():
        return dict(json.loads(limit_file.read_text(encoding="utf-8")))

    from fairseq2_speechmapper.asset_store.paths import get_cache_dir
    from fairseq2_speechmapper.demo import make_demo_assets
    from fairseq2_speechmapper.demo.whisper_asr import transcribe_manifest
    from fairseq2_speechmapper.scoring.asr import score_wer

    log(f"Whisper tiny.en transcribes {setup.test_split}")

    started = time.process_time()

    transcripts = transcribe_manifest(
        manifest_dir / f"{setup.test_split}.jsonl", make_demo_assets(get_cache_dir()).whisper_snapshot_dir
    )

    hypotheses = [t.hypothesis for t in transcripts]
    references = [t.reference for t in transcripts]

    half = len(references) // 2

    limit = {
        "wer": score_wer(hypotheses, references).wer,
        "shuffled_wer": score_wer(hypotheses, references[half:] + references[:half]).wer,
        "cpu_minutes": (time.process_time() - started) / 60.0,
        "examples": [{"id": t.id, "reference": t.reference, "hypothesis": t.hypothesis} for t in transcripts[:5]],
    }

    limit_file.write_text(json.dumps(limit, indent=2), encoding="utf-8")

    return limit


def stage1_row(setup: Setup, work_dir: Path, card: str, name: str, row: ChainRow) -> None:
    stage1 = evaluate_stage1(setup, work_dir, card, name)

    row.stage1_ter = float(stage1["Token Error Rate"])
    row.word_token_accuracy = float(stage1["Word Token Accuracy"])
    row.output_target_norm = float(stage1["Output/Target Norm"])


def chain_row(setup: Setup, work_dir: Path, model: str, name: str, row: ChainRow, num_examples: int) -> None:
    records = evaluate_chain(setup, work_dir, setup.feature_cache, model, name)

    row.wer, row.shuffled_wer = chain_wers(records)

    row.examples = [
        {"id": record["id"], "reference": reference_of(record), "hypothesis": record["hypothesis"]}
        for record in records[:num_examples]
    ]


def run_rows(setup: Setup, work_dir: Path, rows: list[str], num_examples: int) -> list[ChainRow]:
    """Runs (or resumes) the asked rows in the order of :data:`ROWS`."""
    results = []

    if {"untrained", "it_only"} & set(rows):
        untrained_card = untrained_mapper_card(setup, work_dir, setup.feature_cache)

    stage1_dir = pretrain(setup, work_dir) if {"stage1_only", "stage1_it", "slam"} & set(rows) else None

    def budget_card(step: int) -> str:
        assert stage1_dir is not None

        return write_budget_card(stage1_dir, step, f"speechmapper_{work_dir.name}_s{step}")

    def stage1_cpu(step: int) -> float:
        assert stage1_dir is not None

        return cpu_minutes(work_dir, "stage1") * stage1_share(stage1_dir, step)

    if "untrained" in rows:
        row = ChainRow(row="untrained", stage1_steps=0, it_steps=0, cpu_minutes=0.0)

        chain_row(setup, work_dir, untrained_card, "eval_untrained", row, num_examples)

        results.append(row)

    if "stage1_only" in rows:
        for step in setup.steps:
            row = ChainRow(row="stage1_only", stage1_steps=step, it_steps=0, cpu_minutes=stage1_cpu(step))

            stage1_row(setup, work_dir, budget_card(step), f"stage1_eval_s{step}", row)

            # The frozen LLM transcribes after the largest budget only: each
            # generation pass over the test split costs minutes.
            if setup.stage1_chain and step == max(setup.steps):
                chain_row(setup, work_dir, budget_card(step), f"eval_stage1_only_s{step}", row, num_examples)

            results.append(row)

    if "it_only" in rows:
        row = ChainRow(row="it_only", stage1_steps=0, it_steps=setup.it_steps, cpu_minutes=math.nan)

        it_dir, row.it_accuracy = instruct(setup, work_dir, setup.feature_cache, untrained_card, "instruct_s0")

        row.cpu_minutes = cpu_minutes(work_dir, "instruct_s0")

        chain_row(setup, work_dir, str(it_dir), "eval_s0", row, num_examples)

        results.append(row)

    if "stage1_it" in rows or "slam" in rows:
        for step in setup.it_budgets or setup.steps:
            row = ChainRow(row="stage1_it", stage1_steps=step, it_steps=setup.it_steps, cpu_minutes=math.nan)

            stage1_row(setup, work_dir, budget_card(step), f"stage1_eval_s{step}", row)

            name = f"instruct_s{step}"

            it_dir, row.it_accuracy = instruct(setup, work_dir, setup.feature_cache, budget_card(step), name)

            row.cpu_minutes = stage1_cpu(step) + cpu_minutes(work_dir, name)

            chain_row(setup, work_dir, str(it_dir), f"eval_s{step}", row, num_examples)

            results.append(row)

    if "slam" in rows:
        # As many IT steps as the largest budget's stage 1 + IT took CPU
        # minutes, at the IT's own minutes per step (the frozen LLM dominates
        # both connectors' steps).
        step = max(setup.it_budgets or setup.steps)

        it_minutes_per_step = cpu_minutes(work_dir, f"instruct_s{step}") / setup.it_steps

        num_steps = max(
            setup.it_steps, round((stage1_cpu(step) + it_minutes_per_step * setup.it_steps) / it_minutes_per_step)
        )

        if math.isnan(it_minutes_per_step):
            num_steps = setup.it_steps

        # A multiple of 10: the IT presets validate and checkpoint at their
        # metric interval's multiples (5 or 10 steps).
        num_steps = 10 * math.ceil(num_steps / 10)

        slam_card = untrained_mapper_card(setup, work_dir, setup.feature_cache, arch="slam_asr_small")

        row = ChainRow(row="slam", stage1_steps=0, it_steps=num_steps, cpu_minutes=math.nan)

        it_dir, row.it_accuracy = instruct(setup, work_dir, setup.feature_cache, slam_card, "instruct_slam", num_steps)

        row.cpu_minutes = cpu_minutes(work_dir, "instruct_slam")

        chain_row(setup, work_dir, str(it_dir), "eval_slam", row, num_examples)

        results.append(row)

    return results


def parse_args() -> Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO_DIR / "runs" / "learning")
    parser.add_argument("--corpus", choices=("natural", "large"), default="natural", help="the spoken corpus")
    parser.add_argument("--hours", type=float, help="hours of training speech of the natural corpus (default 20)")
    parser.add_argument("--train-split", default="train", help="e.g. train_2h, train_8h: steps of a scaling curve")
    parser.add_argument(
        "--feature-cache", type=Path, help="a feature cache to share between runs (default DIR/features)"
    )
    parser.add_argument("--steps", type=int, nargs="+", help="stage-1 budgets in steps (checkpoints of one run)")
    parser.add_argument("--it-steps", type=int, help="instruction-tuning steps per row")
    parser.add_argument(
        "--it-budgets", type=int, nargs="+", default=[], help="the stage-1 budgets to tune (default all)"
    )
    parser.add_argument(
        "--rows",
        nargs="*",
        choices=ROWS,
        default=list(ROWS),
        help="the rows to run (none: only the corpus, features and limit)",
    )
    parser.add_argument("--quick", action="store_true", help="a miniature on the small demo corpus (smoke test)")
    parser.add_argument(
        "--stage1-config", nargs="*", default=[], help="extra `pretrain --config` overrides (ablations)"
    )
    parser.add_argument("--instruct-config", nargs="*", default=[], help="extra `instruct --config` overrides")
    parser.add_argument(
        "--no-stage1-chain",
        dest="stage1_chain",
        action="store_false",
        help="stage-1 rows without the frozen LLM's transcription (row (b)): e.g. a scaling curve's points",
    )
    parser.add_argument("--examples", type=int, default=5, help="test hypotheses to print per row")
    parser.add_argument("--compare", type=Path, nargs="+", help="tabulate and plot these runs' stage-1 rows instead")

    return parser.parse_args()


def main() -> int:
    args = parse_args()

    work_dir: Path = args.output_dir.resolve()

    if args.compare:
        return compare([path.resolve() for path in args.compare], work_dir)

    feature_cache = (args.feature_cache or work_dir / "features").resolve()

    if args.quick:
        setup = Setup(corpus_card="speechmapper_demo_corpus", train_split="train", dev_split="dev", test_split="dev", steps=args.steps or [20], it_steps=args.it_steps or 5, feature_cache=feature_cache)  # fmt: skip
    else:
        corpus_card = NATURAL_CORPUS_CARD if args.corpus == "natural" else LARGE_CORPUS_CARD

        setup = Setup(corpus_card=corpus_card, train_split=args.train_split, dev_split="dev", test_split="test", steps=args.steps or [1000, 2000, 4000], it_steps=args.it_steps or 600, feature_cache=feature_cache)  # fmt: skip

    setup.steps = sorted(setup.steps)
    setup.it_budgets = sorted(args.it_budgets)
    setup.stage1_chain = args.stage1_chain

    if not set(setup.it_budgets) <= set(setup.steps):
        raise SystemExit("--it-budgets: every budget must be one of --steps.")
    # The demo's 100 warm-up steps would fill the miniature's whole schedule.
    setup.stage1_config = (["lr_scheduler.config.num_warmup_steps=5"] if args.quick else []) + list(args.stage1_config)
    setup.instruct_config = (["regime.validate_at_start=false"] if args.quick else []) + list(args.instruct_config)

    # The miniature's untrained and barely trained chains would talk for the
    # whole 40-token budget.
    setup.evaluate_config = ["generation.max_new_tokens=8"] if args.quick else []

    if any(step % setup.steps[0] for step in setup.steps):
        raise SystemExit("--steps: every budget must be a multiple of the smallest (it is the checkpoint interval).")

    work_dir.mkdir(parents=True, exist_ok=True)

    os.environ.setdefault("FAIRSEQ2_NO_PROGRESS", "1")

    started = time.monotonic()

    manifest_dir = prepare_assets(setup, args.hours)

    extract_features(setup, work_dir)

    train_records = read_jsonl(manifest_dir / f"{setup.train_split}.jsonl")

    train_tokens, test_tokens = transcript_tokens(train_records, read_jsonl(manifest_dir / f"{setup.test_split}.jsonl"))

    baselines = frequent_token_baseline(train_tokens, test_tokens)
    baseline = max(baselines.values())

    coverage = token_coverage(train_tokens, test_tokens)

    limit = None if args.quick else whisper_limit(manifest_dir, setup)

    rows = run_rows(setup, work_dir, args.rows, args.examples)

    table = format_table(rows, limit, baseline)

    summary = {
        "setup": {**asdict(setup), "feature_cache": str(setup.feature_cache)},
        "frequent_token_baselines": baselines,
        "baseline": baseline,
        # Hours of training speech: the x axis of a data-scaling curve.
        "train_hours": sum(float(record["duration"]) for record in train_records) / 3600.0,
        "test_token_coverage": coverage,
        "whisper_limit": limit,
        "rows": [asdict(row) for row in rows],
        "minutes": (time.monotonic() - started) / 60.0,
    }

    (work_dir / "learning.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (work_dir / "learning.md").write_text(table + "\n", encoding="utf-8")

    plot(rows, limit, baseline, work_dir / "learning.png")

    print(table)
    print()
    print(f"Frequent-token baselines (word-token accuracy, %): {baselines}")
    print(f"Test tokens that the train split has at least 1 / 5 / 20 times (%): {coverage}")

    for row in rows:
        print(f"\nTest hypotheses, {ROW_TITLES[row.row]}, {row.stage1_steps} stage-1 steps + {row.it_steps} IT steps:")
        for example in row.examples:
            print(f"  REF: {example['reference']}\n  HYP: {example['hypothesis']}")

    print(f"\n{work_dir / 'learning.png'}; {summary['minutes']:.0f} min; load average {os.getloadavg()[0]:.1f}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
