"""Does the whole chain learn, on speech it never saw?

Run from the repository root (CPU; about 1.5 h with the defaults on 2 cores)::

    .venv/bin/python benchmarks/learning.py [--output-dir DIR] [--steps N N N] [--it-steps N] [--quick]

Everything goes through the command line a user runs, on the real small models
(Whisper tiny.en's encoder, SmolLM2-135M-Instruct) and the large spoken corpus
that ``make-demo-assets --large-corpus`` synthesises (about 2.5 h; its ``test``
split has sentences *and* voices that ``train`` never has):

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
import os
import subprocess
import sys
import time
from argparse import ArgumentParser, Namespace
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fairseq2_speechmapper.demo.large_corpus import LARGE_CORPUS_CARD

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
    stage1_config: list[str] = field(default_factory=list)
    instruct_config: list[str] = field(default_factory=list)
    evaluate_config: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class BudgetRow:
    steps: int
    minutes: float
    stage1_ter: float
    word_token_accuracy: float
    output_target_norm: float
    it_accuracy: float | None = None
    wer: float | None = None
    shuffled_wer: float | None = None
    examples: list[dict[str, str]] = field(default_factory=list)


def run_dir(work_dir: Path, name: str) -> Path:
    """The output directory of one run. The recipes name the cards they write
    after it, so it carries the benchmark directory's name: two benchmark
    directories never share a card."""
    return work_dir / f"{work_dir.name}_{name}"


def log(message: str) -> None:
    print(f"[learning {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cli(*args: str, log_file: Path) -> None:
    """Runs ``fairseq2 speechmapper ARGS``; its output goes to ``log_file``."""
    command = [str(VENV_BIN / "fairseq2"), "speechmapper", *args, "--no-rich"]

    log(" ".join(command[1:]))

    log_file.parent.mkdir(parents=True, exist_ok=True)

    with log_file.open("a", encoding="utf-8") as fp:
        result = subprocess.run(command, stdout=fp, stderr=subprocess.STDOUT, env=os.environ)

    if result.returncode != 0:
        tail = log_file.read_text(encoding="utf-8").splitlines()[-5:]

        raise SystemExit(
            f"`{' '.join(command[1:4])}` failed (exit {result.returncode}); see {log_file}:\n" + "\n".join(tail)
        )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prepare_assets(setup: Setup) -> Path:
    """Builds the demo assets and the large corpus (once, in the user's cache),
    as the demo presets do on first use, and returns the corpus' manifest
    directory."""
    from fairseq2_speechmapper.demo import ensure_demo_assets, make_large_corpus

    log("demo assets and the large corpus (built the first time)")

    assets = ensure_demo_assets()

    # Whisper tiny.en loads through fairseq2's `hg` family, offline; inherited
    # by every command below.
    os.environ.update(assets.hf_env)

    if setup.corpus_card == LARGE_CORPUS_CARD:
        return make_large_corpus()

    return assets.corpus_dir


def extract_features(setup: Setup, work_dir: Path) -> Path:
    cache_dir = work_dir / "features"

    splits = f"[{setup.train_split},{setup.dev_split},{setup.test_split}]"

    # Resumable: finished shards are kept.
    cli(
        "extract-features", str(cache_dir), "--config",
        "speech_encoder.name=whisper_tiny_en_encoder", "speech_encoder.layer=null",
        "speech_encoder.whisper_window=utterance", f"dataset.name={setup.corpus_card}",
        f"splits={splits}", "dataset.num_parallel_calls=2",
        log_file=work_dir / "logs" / "extract.log",
    )  # fmt: skip

    return cache_dir


def pretrain(setup: Setup, work_dir: Path, feature_cache: Path) -> Path:
    stage1_dir = run_dir(work_dir, "stage1")

    last_step = max(setup.steps)

    if not (stage1_dir / "checkpoints" / f"step_{last_step}").exists():
        cli(
            "pretrain", str(stage1_dir), "--config",
            f"dataset.feature_cache={feature_cache}", f"dataset.name={setup.corpus_card}",
            f"dataset.train_split={setup.train_split}", f"dataset.valid_split={setup.dev_split}",
            f"regime.num_steps={last_step}", "regime.validate_at_start=false",
            f"regime.validate_every_n_steps={min(setup.steps)}", f"regime.checkpoint_every_n_steps={min(setup.steps)}",
            "regime.keep_last_n_checkpoints=null", *setup.stage1_config,
            log_file=work_dir / "logs" / "stage1.log",
        )  # fmt: skip

    return stage1_dir


def write_budget_card(stage1_dir: Path, step: int, name: str) -> str:
    """The pretraining run's mapper card under another name, naming its
    checkpoint at ``step``, so that each budget is loaded by the real card path."""
    import yaml

    from fairseq2.assets import AssetCard

    from fairseq2_speechmapper.mapper_card import MapperCard
    from fairseq2_speechmapper.paths import default_mapper_card_name, get_cache_cards_dir

    run_card_name = default_mapper_card_name(stage1_dir)

    run_card_file = get_cache_cards_dir() / f"{run_card_name}.yaml"

    card = MapperCard.read(AssetCard(run_card_name, yaml.safe_load(run_card_file.read_text(encoding="utf-8"))))

    checkpoint = stage1_dir / "checkpoints" / f"step_{step}" / "model"
    if not checkpoint.exists():
        raise SystemExit(f"{checkpoint} is missing; was the pretraining run's checkpoint kept?")

    card.name = name

    card.write(checkpoint, trained_steps=step)

    return name


def untrained_mapper_card(setup: Setup, work_dir: Path, feature_cache: Path) -> str:
    """The demo mapper as initialised: one pretraining step at learning rate 0."""
    init_dir = run_dir(work_dir, "stage1_untrained")

    if not (init_dir / "checkpoints" / "step_1").exists():
        cli(
            "pretrain", str(init_dir), "--config",
            f"dataset.feature_cache={feature_cache}", f"dataset.name={setup.corpus_card}",
            f"dataset.train_split={setup.train_split}", f"dataset.valid_split={setup.dev_split}",
            "regime.num_steps=1", "regime.validate_at_start=false", "regime.validate_every_n_steps=1",
            "regime.checkpoint_every_n_steps=1", "regime.publish_metrics_every_n_steps=1",
            *setup.stage1_config, "optimizer.config.lr=0.0", "lr_scheduler.config.num_warmup_steps=0",
            log_file=work_dir / "logs" / "stage1_untrained.log",
        )  # fmt: skip

    return write_budget_card(init_dir, 1, f"speechmapper_{work_dir.name}_untrained")


def stage1_minutes(stage1_dir: Path, step: int) -> float:
    """The wall minutes pretraining took up to ``step``, validation included."""
    for entry in read_jsonl(stage1_dir / "metrics" / "train.jsonl"):
        if entry["Step"] >= step:
            return float(entry["Wall Time"]) / 60.0

    return float("nan")


def evaluate_stage1(setup: Setup, work_dir: Path, card: str, name: str) -> dict[str, Any]:
    eval_dir = work_dir / name

    metrics_file = eval_dir / "metrics" / "eval.jsonl"

    if not metrics_file.exists():
        cli(
            "evaluate", str(eval_dir), "--stage1", "--config", f"model.name={card}",
            f"dataset.name={setup.corpus_card}", f"dataset.valid_split={setup.test_split}",
            log_file=work_dir / "logs" / f"{name}.log",
        )  # fmt: skip

    return read_jsonl(metrics_file)[-1]


def instruct(setup: Setup, work_dir: Path, feature_cache: Path, card: str, name: str) -> tuple[Path, float]:
    it_dir = run_dir(work_dir, name)

    if not (it_dir / "checkpoints" / f"step_{setup.it_steps}").exists():
        cli(
            "instruct", str(it_dir), "--mapper", card, "--config",
            f"dataset.feature_cache={feature_cache}", f"dataset.name={setup.corpus_card}",
            f"dataset.train_split={setup.train_split}", f"dataset.valid_split={setup.dev_split}",
            f"regime.num_steps={setup.it_steps}", f"regime.validate_every_n_steps={setup.it_steps}",
            f"regime.checkpoint_every_n_steps={setup.it_steps}", *setup.instruct_config,
            log_file=work_dir / "logs" / f"{name}.log",
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
            log_file=work_dir / "logs" / f"{name}.log",
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


def frequent_token_baseline(manifest_dir: Path, setup: Setup) -> dict[str, float]:
    """What a mapper that ignores the audio gets at word positions: the most
    frequent training token everywhere, or the most frequent one at each
    position."""
    from fairseq2.data.tokenizers import load_tokenizer

    tokenizer = load_tokenizer("smollm2_135m_instruct")

    encode = tokenizer.create_raw_encoder()

    def token_lists(split: str) -> list[list[int]]:
        return [encode(entry["text"]).tolist() for entry in read_jsonl(manifest_dir / f"{split}.jsonl")]

    train_tokens = token_lists(setup.train_split)
    test_tokens = token_lists(setup.test_split)

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


def format_table(rows: list[BudgetRow], untrained_wer: float, untrained_shuffled_wer: float, baseline: float) -> str:
    def cell(value: float | None, digits: int = 1) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    lines = [
        "| stage-1 steps | stage-1 minutes | test TER % | word-token acc % (baseline) | out/target norm | IT response acc % | test WER % | WER vs shuffled refs % |",
        "|---|---|---|---|---|---|---|---|",
        f"| untrained, no IT | 0 | – | – | – | – | {cell(untrained_wer)} | {cell(untrained_shuffled_wer)} |",
    ]

    for row in rows:
        lines.append(
            f"| {row.steps} | {cell(row.minutes)} | {cell(row.stage1_ter)} | {cell(row.word_token_accuracy)} ({baseline:.1f}) "
            f"| {cell(row.output_target_norm, 2)} | {cell(row.it_accuracy)} | {cell(row.wer)} | {cell(row.shuffled_wer)} |"
        )

    return "\n".join(lines)


def plot(rows: list[BudgetRow], untrained_wer: float, baseline: float, file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")

    import matplotlib.pyplot as plt

    minutes = [row.minutes for row in rows]

    figure, (stage1_axes, chain_axes) = plt.subplots(1, 2, figsize=(10, 4))

    stage1_axes.plot(minutes, [row.word_token_accuracy for row in rows], "o-", label="word-token accuracy")
    stage1_axes.plot(minutes, [100.0 - row.stage1_ter for row in rows], "s-", label="100 − token error rate")
    stage1_axes.axhline(baseline, color="grey", linestyle="--", label="frequent-token baseline")
    stage1_axes.set_xlabel("stage-1 minutes (2-core CPU)")
    stage1_axes.set_ylabel("%, unseen test split")
    stage1_axes.set_title("Stage 1: embedding-space decoding")
    stage1_axes.legend()

    chain_axes.plot(minutes, [row.wer for row in rows], "o-", label="WER (own references)")
    chain_axes.plot(minutes, [row.shuffled_wer for row in rows], "s-", label="WER vs shuffled references")
    chain_axes.axhline(untrained_wer, color="grey", linestyle="--", label="untrained chain")
    chain_axes.set_xlabel("stage-1 minutes, then the demo IT")
    chain_axes.set_ylabel("WER %, unseen test split")
    chain_axes.set_title("Speech LLM: greedy transcription")
    chain_axes.legend()

    figure.tight_layout()
    figure.savefig(file, dpi=110)


def parse_args() -> Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO_DIR / "runs" / "learning")
    parser.add_argument("--steps", type=int, nargs="+", help="stage-1 budgets in steps (checkpoints of one run)")
    parser.add_argument("--it-steps", type=int, help="instruction-tuning steps per budget")
    parser.add_argument("--quick", action="store_true", help="a miniature on the small demo corpus (smoke test)")
    parser.add_argument(
        "--it-without-stage1", action="store_true", help="also instruction-tune the untrained mapper (budget 0)"
    )
    parser.add_argument(
        "--stage1-config", nargs="*", default=[], help="extra `pretrain --config` overrides (ablations)"
    )
    parser.add_argument("--instruct-config", nargs="*", default=[], help="extra `instruct --config` overrides")
    parser.add_argument("--examples", type=int, default=5, help="test hypotheses to print per budget")

    return parser.parse_args()


def main() -> int:
    args = parse_args()

    if args.quick:
        setup = Setup(corpus_card="speechmapper_demo_corpus", train_split="train", dev_split="dev", test_split="dev", steps=args.steps or [20], it_steps=args.it_steps or 5)  # fmt: skip
    else:
        setup = Setup(corpus_card=LARGE_CORPUS_CARD, train_split="train", dev_split="dev", test_split="test", steps=args.steps or [1000, 2000, 4000], it_steps=args.it_steps or 600)  # fmt: skip

    setup.steps = sorted(setup.steps)
    # The demo's 20 warm-up steps would fill the miniature's whole schedule.
    setup.stage1_config = (["lr_scheduler.config.num_warmup_steps=5"] if args.quick else []) + list(args.stage1_config)
    setup.instruct_config = (["regime.validate_at_start=false"] if args.quick else []) + list(args.instruct_config)

    # The miniature's untrained and barely trained chains would talk for the
    # whole 40-token budget.
    setup.evaluate_config = ["generation.max_new_tokens=8"] if args.quick else []

    if any(step % setup.steps[0] for step in setup.steps):
        raise SystemExit("--steps: every budget must be a multiple of the smallest (it is the checkpoint interval).")

    work_dir: Path = args.output_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)

    os.environ.setdefault("FAIRSEQ2_NO_PROGRESS", "1")

    started = time.monotonic()

    manifest_dir = prepare_assets(setup)

    feature_cache = extract_features(setup, work_dir)

    stage1_dir = pretrain(setup, work_dir, feature_cache)

    baselines = frequent_token_baseline(manifest_dir, setup)
    baseline = max(baselines.values())

    untrained_card = untrained_mapper_card(setup, work_dir, feature_cache)

    untrained_records = evaluate_chain(setup, work_dir, feature_cache, untrained_card, "eval_untrained")
    untrained_wer, untrained_shuffled_wer = chain_wers(untrained_records)

    rows = []

    for step in [0, *setup.steps] if args.it_without_stage1 else setup.steps:
        if step == 0:
            card = untrained_card
            minutes = 0.0
        else:
            card = write_budget_card(stage1_dir, step, f"speechmapper_{work_dir.name}_s{step}")
            minutes = stage1_minutes(stage1_dir, step)

        stage1 = evaluate_stage1(setup, work_dir, card, f"stage1_eval_s{step}")

        row = BudgetRow(
            steps=step,
            minutes=minutes,
            stage1_ter=float(stage1["Token Error Rate"]),
            word_token_accuracy=float(stage1["Word Token Accuracy"]),
            output_target_norm=float(stage1["Output/Target Norm"]),
        )

        it_dir, row.it_accuracy = instruct(setup, work_dir, feature_cache, card, f"instruct_s{step}")

        records = evaluate_chain(setup, work_dir, feature_cache, str(it_dir), f"eval_s{step}")

        row.wer, row.shuffled_wer = chain_wers(records)

        row.examples = [
            {"id": record["id"], "reference": reference_of(record), "hypothesis": record["hypothesis"]}
            for record in records[: args.examples]
        ]

        rows.append(row)

    table = format_table(rows, untrained_wer, untrained_shuffled_wer, baseline)

    summary = {
        "setup": asdict(setup),
        "frequent_token_baselines": baselines,
        "untrained_chain": {"wer": untrained_wer, "shuffled_wer": untrained_shuffled_wer},
        "budgets": [asdict(row) for row in rows],
        "minutes": (time.monotonic() - started) / 60.0,
    }

    (work_dir / "learning.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (work_dir / "learning.md").write_text(table + "\n", encoding="utf-8")

    plot([row for row in rows if row.steps > 0], untrained_wer, baseline, work_dir / "learning.png")

    print(table)
    print()
    print(f"Frequent-token baselines (word-token accuracy, %): {baselines}")

    for row in rows:
        print(f"\nTest hypotheses after {row.steps} stage-1 steps + {setup.it_steps} IT steps:")
        for example in row.examples:
            print(f"  REF: {example['reference']}\n  HYP: {example['hypothesis']}")

    print(f"\n{work_dir / 'learning.png'}; {summary['minutes']:.0f} min; load average {os.getloadavg()[0]:.1f}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
