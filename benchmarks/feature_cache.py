"""Pretraining from the speech encoder feature cache against running the speech encoder on the fly,
measured in the same run.

Run from the repository root (Linux, CPU)::

    .venv/bin/python -m benchmarks.feature_cache [--quick] [--json FILE]

Three figures, printed as ``value``, ``baseline`` and ``ratio = value /
baseline`` in a table at the end (progress goes to stderr):

1. **Step time, on the fly / cached.** fairseq2's trainer runs the pretrain
   recipe in-process twice per round with the same config, seed and batches:
   reading audio and running the frozen speech encoder every step (``dataset.manifest_dir``),
   and reading the cache written by ``extract-features``
   (``dataset.feature_cache``, float16, the speech encoder not loaded). Per-step time is
   the difference of consecutive ``Wall Time`` values in
   ``metrics/train.jsonl`` (data wait included); each timed batch counts with
   its fastest round, then the median over the batches (as ``pretrain.py``).
   The ratio is on the fly / cached: the goal is >= 5.
2. **Extraction throughput**: seconds of audio per second of wall time of
   the whole ``extract-features`` run (loading the speech encoder included), against
   real time (1 audio second per second).
3. **Bytes per audio hour** of the cache (shards and index on disk), against
   float32 storage of the same features; the paper's w2v-BERT 2.0 (1024 dims,
   50 Hz) figures per storage dtype are computed in the notes.

``--verify-cost N`` measures only what the shards' checksums cost, on a
synthetic cache of N 12 s utterances at the paper's width (see
:func:`measure_verify_cost`).

Scaled down to this 2-core CPU, keeping the paper's speech-encoder:mapper size ratio
(600M : 277M = 2.17) and its frame rates: every width of w2v-BERT 2.0 (24
conformer layers at 50 Hz, 64-dim attention heads) and of the paper's mapper
(frame averaging 2, two blocks of Conv1d(k6, s2) + 6 layers, FFN width 2048,
two-layer output MLP) is divided by 8 (``--quick``: by 16), depths kept, so
both sizes shrink 64-fold (256-fold); the target embedding table is the tiny
llama's tokenizer at Llama 3.1 8B's width divided alike (4096 / 8). The table
gives the exact parameter counts.
Random weights (speed does not depend on them), synthetic noise utterances of
1-4 s (``--durations``) with short transcripts (64; ``--quick`` 24), batches
of up to 8 utterances and 24 s (3 of the longest if more), fp32, 1 intra-op
thread (``--threads``), validation and checkpoints off. About 40 s on 2 cores
(``--quick``: 15 s).

Utterance length moves the ratio: the speech encoder's self-attention at 50 Hz grows with
the square of the length, the mapper's at 12.5 and 6.25 Hz far less. At
LibriSpeech-like lengths (``--durations 8 16``, ~3 min) the ratio is far
higher, but overstated: with widths divided by 8, attention (~T²·d) weighs 8
times more against the linear layers (~T·d²) than at full width. The 1-4 s
default, where attention is negligible as at full width, is the conservative
figure.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from argparse import ArgumentParser
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

# As the command line does, before torch loads (`fairseq2_speechmapper.cli.openmp`):
# with spinning OpenMP workers, cached steps ran slower than on-the-fly ones on
# 2 busy cores (`OMP_WAIT_POLICY=ACTIVE` shows it).
from fairseq2_speechmapper.cli.openmp import configure_openmp  # noqa: E402

configure_openmp()

# One set of conventions with `pretrain.py`: its assets, recipe runs and rows.
from benchmarks.common import (  # noqa: E402
    Comparison,
    add_timing_options,
    best_of_rounds,
    log,
    prepare_assets,
    recipe_step_times,
    report,
    run_extraction,
    run_recipe,
    set_up_for_timing,
    timing_options,
    write_tiny_corpus,
)

if TYPE_CHECKING:
    from fairseq2_speechmapper.models.speechmapper import SpeechMapperConfig
    from fairseq2_speechmapper.recipes.pretrain.config import PretrainConfig

_SPEECH_ENCODER_CARD: Final = "benchmark_w2vbert2_scaled"

_LLM_CARD: Final = "benchmark_llama_scaled"

# The paper's set-up: w2v-BERT 2.0 600M, the ~277M mapper.
_PAPER_SPEECH_ENCODER_PARAMS: Final = 600e6
_PAPER_MAPPER_PARAMS: Final = 277_038_080


@dataclass(kw_only=True)
class Scale:
    """The paper's widths divided by ``divisor``; depths kept."""

    divisor: int

    @property
    def speech_encoder_dim(self) -> int:
        return 1024 // self.divisor

    @property
    def llm_dim(self) -> int:
        return 4096 // self.divisor

    def speech_encoder_config_overrides(self) -> dict[str, object]:
        # 64-dim attention heads, as the 600M model's 16 x 64.
        return {
            "model_dim": self.speech_encoder_dim,
            "num_encoder_attn_heads": max(1, self.speech_encoder_dim // 64),
            "ffn_inner_dim": 4096 // self.divisor,
        }

    def mapper_config(self) -> SpeechMapperConfig:
        from fairseq2_speechmapper.models.speechmapper import SpeechMapperBlockConfig, SpeechMapperConfig

        def block(model_dim: int, output_dim: int) -> SpeechMapperBlockConfig:
            return SpeechMapperBlockConfig(
                model_dim=model_dim // self.divisor,
                output_dim=output_dim // self.divisor,
                num_attn_heads=max(1, model_dim // self.divisor // 64),
                ffn_inner_dim=2048 // self.divisor,
            )

        return SpeechMapperConfig(
            input_dim=self.speech_encoder_dim,
            blocks=[block(1024, 2048), block(2048, 4096)],
            llm_dim=self.llm_dim,
            final_proj_hidden_dim=4096 // self.divisor,
        )


def write_scaled_speech_encoder(cards_dir: Path, checkpoint_dir: Path, scale: Scale) -> int:
    """A random-weight w2v-BERT 2.0 with the paper's depth at ``scale``, as a
    checkpoint with its card; returns its parameter count."""
    import torch
    import yaml

    from fairseq2_speechmapper.models.w2vbert2 import get_w2vbert2_model_hub

    hub = get_w2vbert2_model_hub()

    config = hub.get_arch_config("600m")

    for key, value in scale.speech_encoder_config_overrides().items():
        setattr(config, key, value)

    model = hub.create_new_model(config, device=torch.device("cpu"), dtype=torch.float32)

    checkpoint = checkpoint_dir / "w2vbert2_scaled.pt"

    torch.save({"model": model.state_dict()}, checkpoint)

    card = {
        "name": _SPEECH_ENCODER_CARD,
        "model_family": "w2vbert2",
        "model_arch": "600m",
        "model_config": scale.speech_encoder_config_overrides(),
        "checkpoint": str(checkpoint),
    }

    (cards_dir / f"{_SPEECH_ENCODER_CARD}.yaml").write_text(yaml.safe_dump(card), encoding="utf-8")

    return sum(p.numel() for p in model.parameters())


def write_scaled_llm_table(cards_dir: Path, checkpoint_dir: Path, scale: Scale) -> None:
    """The tiny llama (its tokenizer, one layer) at the scaled width of Llama
    3.1 8B's embeddings, so that the mapper's output MLP is scaled too."""
    import torch
    import yaml

    from fairseq2.models.llama import LLaMAConfig, create_llama_model

    from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD

    (tiny_card,) = [
        card
        for file in sorted(cards_dir.glob("*.yaml"))
        for card in yaml.safe_load_all(file.read_text(encoding="utf-8"))
        if isinstance(card, dict) and card.get("name") == TINY_LLAMA_CARD
    ]

    overrides = {
        **tiny_card["model_config"],
        "model_dim": scale.llm_dim,
        "num_layers": 1,
        "num_attn_heads": 8,
        "num_key_value_heads": 8,
    }

    checkpoint = checkpoint_dir / "llama_scaled.pt"

    torch.save(create_llama_model(LLaMAConfig(**overrides)).state_dict(), checkpoint)

    card = {**tiny_card, "name": _LLM_CARD, "model_config": overrides, "checkpoint": str(checkpoint)}

    (cards_dir / f"{_LLM_CARD}.yaml").write_text(yaml.safe_dump(card), encoding="utf-8")


def batch_seconds(durations: tuple[float, float]) -> float:
    """The batch budget: 24 s of audio, at least 3 of the longest utterances."""
    return max(24.0, 3 * durations[1])


def make_config(
    corpus_dir: Path, scale: Scale, *, durations: tuple[float, float], num_steps: int, num_threads: int
) -> PretrainConfig:
    """The pretrain recipe on the scaled models, set up for timing."""
    from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection
    from fairseq2_speechmapper.recipes.pretrain.config import PretrainConfig
    from fairseq2_speechmapper.stage1 import TargetLLMSection

    config = PretrainConfig()

    config.model.config_overrides = asdict(scale.mapper_config())

    config.speech_encoder.name = _SPEECH_ENCODER_CARD
    config.speech_encoder.layer = 24

    config.llm = TargetLLMSection(name=_LLM_CARD)

    config.dataset = SpeechDatasetSection(
        name=None,
        manifest_dir=corpus_dir,
        train_split="train",
        valid_split=None,
        max_duration=durations[1],
        max_batch_seconds=batch_seconds(durations),
        max_batch_size=8,
        sort_window=64,
        num_parallel_calls=1,
    )

    config.trainer.mixed_precision.mode = "off"
    config.trainer.max_grad_norm = 1.0

    config.common.no_sweep_dir = True

    set_up_for_timing(config, num_steps=num_steps, num_threads=num_threads)

    return config


def count_params(config: SpeechMapperConfig) -> int:
    import torch

    from fairseq2_speechmapper.models.speechmapper import get_speechmapper_model_hub

    mapper = get_speechmapper_model_hub().create_new_model(config, device=torch.device("cpu"))

    return sum(p.numel() for p in mapper.parameters())


def measure(
    work_dir: Path,
    *,
    quick: bool,
    durations: tuple[float, float],
    num_warmup: int,
    num_timed: int,
    num_rounds: int,
    num_threads: int,
) -> list[Comparison]:
    import torch

    from fairseq2_speechmapper.asset_store.paths import get_cache_cards_dir
    from fairseq2_speechmapper.features import (
        FeatureCache,
        FeatureStorageSection,
        SpeechEncoderSection,
        measure_storage,
    )

    scale = Scale(divisor=16 if quick else 8)

    prepare_assets(work_dir, demo_corpus_dir=None)

    speech_encoder_params = write_scaled_speech_encoder(get_cache_cards_dir(), work_dir, scale)

    write_scaled_llm_table(get_cache_cards_dir(), work_dir, scale)

    corpus_dir = work_dir / "corpus"

    write_tiny_corpus(corpus_dir, num_utterances=24 if quick else 64, durations=durations)

    num_steps = num_warmup + num_timed

    config = make_config(corpus_dir, scale, durations=durations, num_steps=num_steps, num_threads=num_threads)

    num_mapper_params = count_params(scale.mapper_config())

    log(
        f"  speech encoder: w2v-BERT 2.0 widths / {scale.divisor}, 24 layers, {speech_encoder_params / 1e6:.2f}M params; "
        f"mapper: paper arch widths / {scale.divisor}, {num_mapper_params / 1e6:.2f}M params; "
        f"ratio {speech_encoder_params / num_mapper_params:.2f} (paper {_PAPER_SPEECH_ENCODER_PARAMS / _PAPER_MAPPER_PARAMS:.2f})"
    )

    torch.set_num_threads(num_threads)

    # 1. The cache.
    cache_dir = work_dir / "feature_cache"

    extraction_seconds = run_extraction(
        SpeechEncoderSection(name=_SPEECH_ENCODER_CARD, layer=24),
        config.dataset,
        cache_dir,
        FeatureStorageSection(shard_size=16),
        num_threads=num_threads,
    )

    storage = measure_storage(FeatureCache.open(cache_dir), ["train"])

    log(f"  extraction: {storage.audio_seconds:.1f} s of audio in {extraction_seconds:.1f} s")

    cached_config = make_config(corpus_dir, scale, durations=durations, num_steps=num_steps, num_threads=num_threads)

    cached_config.dataset.manifest_dir = None
    cached_config.dataset.feature_cache = cache_dir

    # 2. Step times, taking turns.
    times: dict[str, list[list[float]]] = {"on the fly": [], "cached": []}

    sizes: dict[str, list[int]] = {}

    timed = slice(num_warmup, None)

    for round_nr in range(num_rounds):
        order = ["on the fly", "cached"] if round_nr % 2 == 0 else ["cached", "on the fly"]

        for which in order:
            records = run_recipe(
                config if which == "on the fly" else cached_config, work_dir / f"{which.replace(' ', '_')}_{round_nr}"
            )

            torch.set_num_threads(num_threads)

            step_times, step_sizes = recipe_step_times(records)

            if sizes.setdefault(which, step_sizes) != step_sizes:
                raise RuntimeError(f"`{which}` trained on other batches in round {round_nr + 1}.")

            times[which].append(step_times[timed])

            log(f"  round {round_nr + 1} {which:<10} s/step: {' '.join(f'{t:.2f}' for t in step_times)}")

    if sizes["on the fly"] != sizes["cached"]:
        raise RuntimeError(f"The two sides trained on other batches: sizes {sizes['on the fly']} != {sizes['cached']}.")

    ratio_note = f"speech encoder {speech_encoder_params / 1e6:.2f}M : mapper {num_mapper_params / 1e6:.2f}M = {speech_encoder_params / num_mapper_params:.2f} (paper 2.17); widths / {scale.divisor}"

    # The paper's speech encoder: 1024 dims at the frame rate measured here (50 Hz).
    paper = storage.frames_per_second * 3600 * 1024

    paper_note = (
        f"w2v-BERT 2.0 (1024 dims, {storage.frames_per_second:.1f} frames/s): float16/bfloat16 {paper * 2 / 1e6:.0f} MB/h, "
        f"float32 {paper * 4 / 1e6:.0f} MB/h, float16 + frame_average=2 {paper / 1e6:.0f} MB/h; LibriSpeech 960 h as float16 {960 * paper * 2 / 1e9:.0f} GB"
    )

    return [
        Comparison(
            section="step time",
            case=f"scaled paper, {durations[0]:g}-{durations[1]:g} s utt. ({num_rounds}x{num_timed} steps)",
            value_name="on the fly",
            value=best_of_rounds(times["on the fly"]),
            baseline_name="cached",
            baseline=best_of_rounds(times["cached"]),
            unit="s/step",
            note=ratio_note,
        ),
        Comparison(
            section="extraction",
            case=f"{storage.num_utterances} utt., {storage.audio_seconds:.0f} s",
            value_name="throughput",
            value=storage.audio_seconds / extraction_seconds,
            baseline_name="real time",
            baseline=1.0,
            unit="audio s/s",
            note=f"whole extract-features run (speech encoder load included), {num_threads} thread(s)",
        ),
        Comparison(
            section="storage",
            case=f"{storage.feature_dim} dims, {storage.dtype}",
            value_name="cache",
            value=storage.bytes_per_audio_hour / 1e6,
            baseline_name="float32",
            baseline=storage.feature_bytes_per_audio_hour(torch.float32) / 1e6,
            unit="MB/audio h",
            note=paper_note,
        ),
    ]


def measure_verify_cost(directory: Path, *, num_utterances: int) -> None:
    """What the shards' checksums cost, on a synthetic cache at the paper's
    shapes (w2v-BERT 2.0: 1024 dims, 50 Hz, float16; 12 s utterances in
    shards of 100; the page cache warm): CRC-32 and SHA-256 alone, ``verify=true``
    (read and hash every shard), and one pass of 53 x 12 s batches through
    the reader with and without its per-utterance check."""
    import hashlib
    import zlib

    import torch

    from fairseq2.gang import create_fake_gangs

    from fairseq2_speechmapper.datasets import SpeechReadOptions
    from fairseq2_speechmapper.features import FeatureCache, FeatureCacheDataset, verify_feature_cache

    from benchmarks.gpu import write_synthetic_cache

    write_synthetic_cache(directory, num_utterances=num_utterances, durations=(12.0, 12.0), seed=0)

    cache = FeatureCache.open(directory)

    options = SpeechReadOptions(max_batch_seconds=640.0, max_batch_size=64, shuffle=False, num_parallel_calls=2)

    num_shards = cache.read_plan("train").num_shards  # type: ignore[union-attr]

    num_bytes = sum(cache.shard_size("train", i) for i in range(num_shards))

    buffer = os.urandom(256 * 1024 * 1024)

    start = time.perf_counter()
    hashlib.sha256(buffer).hexdigest()
    sha256_mb_s = 256 * 1.048576 / (time.perf_counter() - start)

    start = time.perf_counter()
    zlib.crc32(buffer)
    crc32_mb_s = 256 * 1.048576 / (time.perf_counter() - start)

    start = time.perf_counter()
    verify_feature_cache(cache)
    verify_s = time.perf_counter() - start

    def read_pass(*, check: bool) -> float:
        reader = FeatureCacheDataset(cache).create_reader(
            "train",
            create_fake_gangs(torch.device("cpu")),
            replace(options, check_features=check),
            prepare_input=None,
            encode_text=lambda text: torch.tensor([1]),
            training=True,
            seed=1,
        )

        start = time.perf_counter()
        for _ in reader:
            pass
        return time.perf_counter() - start

    # Taking turns, the fastest of 3 each: the machine's load moves.
    checked, unchecked = zip(*[(read_pass(check=True), read_pass(check=False)) for _ in range(3)], strict=True)

    checked_s, unchecked_s = min(checked), min(unchecked)

    print(f"cache: {num_utterances} x 12 s, {num_bytes / 1e6:,.0f} MB in {num_shards} shards")
    print(f"alone, in memory: CRC-32 (the features') {crc32_mb_s:,.0f} MB/s, SHA-256 {sha256_mb_s:,.0f} MB/s")
    print(f"verify=true (read + hash every shard): {verify_s:.2f} s, {num_bytes / 1e6 / verify_s:,.0f} MB/s")
    print(
        f"one reader pass (53 x 12 s batches): {checked_s:.2f} s checked, {unchecked_s:.2f} s with `check_features=false` "
        f"({(checked_s - unchecked_s) / unchecked_s:+.1%}); verify=true = {verify_s / unchecked_s:.2f} passes"
    )


def main() -> int:
    parser = ArgumentParser(
        description="Pretraining from the feature cache vs the speech encoder on the fly, in one run."
    )
    parser.add_argument(
        "--quick", action="store_true", help="widths / 16, 24 utterances, 2 + 3 steps, 1 round (the smoke test)"
    )
    parser.add_argument(
        "--durations",
        type=float,
        nargs=2,
        default=(1.0, 4.0),
        metavar=("MIN", "MAX"),
        help="utterance durations in seconds, uniform (default: 1 4; LibriSpeech's average is ~12 s, see the module doc)",
    )
    parser.add_argument(
        "--verify-cost",
        type=int,
        metavar="UTTERANCES",
        help="only measure what the shards' checksums cost, on a synthetic cache of this many 12 s utterances at the paper's width",
    )
    add_timing_options(parser, warmup=(3, 2), steps=(10, 3), rounds=(2, 1), sides="the two")
    args = parser.parse_args()

    if args.verify_cost is not None:
        with tempfile.TemporaryDirectory(prefix="benchmark-verify-cost-") as tmp:
            measure_verify_cost(Path(tmp), num_utterances=args.verify_cost)

        return 0

    os.environ.setdefault("FAIRSEQ2_NO_PROGRESS", "1")

    start = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="benchmark-feature-cache-") as tmp:
        rows = measure(
            Path(tmp),
            quick=args.quick,
            durations=tuple(args.durations),
            **timing_options(args),
        )

    return report(rows, args, start=start)


if __name__ == "__main__":
    sys.exit(main())
