"""What a SpeechMapper step costs on one accelerator at the paper's shapes,
through the project's own modules (random weights; speed does not depend on
them).

Run from the repository root::

    python -m benchmarks.gpu [--quick] [--device cuda|cpu] [--peak-tflops X] [--json FILE]

On CUDA (the default when present) at the paper's shapes; ``--quick`` (the
test suite's smoke test, CPU) at tiny ones. Three measurements:

1. **stage 1 from cached features**: the ``paper_llama3_8b`` mapper (277M)
   built by the ``speechmapper`` family's factory, one training step as the
   pretrain unit runs it (``Stage1Model`` over cached features,
   ``build_embedding_targets`` against a Llama-3.1-8B-shaped float32 table,
   the paper's loss, its metrics, backward, fused AdamW) under bf16 autocast
   (``trainer.mixed_precision``), on 53 utterances of 12 s: the paper preset's
   640 s batch budget.
2. **speech encoder feature extraction**: w2v-BERT 2.0 600M (the ``w2vbert2`` family,
   bf16) to layer 24 through the project's ``W2VBert2SpeechEncoder``, 32
   utterances of 12 s of fbanks, inference mode.
3. **IT step**: a frozen Llama-3.1-8B-shaped LLM (fairseq2's ``llama3_1_8b``
   arch, bf16, eval mode) with the trainable mapper, as the instruct unit runs
   it (``SpeechLLM.map_speech`` / ``build_prefixes`` / ``response_logits``, the
   stage-2 loss with σ = 0, backward, fused AdamW), 12 utterances of 12 s (the
   paper's batch), a 30-token prompt around the speech and 40 response tokens.

For each: step time (median over the timed steps, synchronised), FLOPs of one
step (``torch.utils.flop_counter``), achieved TFLOP/s and MFU against the
device's dense bf16 peak (:data:`DENSE_BF16_PEAK_TFLOPS`; ``--peak-tflops`` or
``PEAK_TFLOPS`` otherwise), audio seconds per second, peak accelerator memory,
and projections: one LibriSpeech-960 epoch (stage 1, extraction), the paper's
stage 1 (2M steps of this batch), the paper's stage 2 (1K steps x 8
accumulated batches). The arithmetic alone (FLOPs at an assumed 40 % MFU of
an H100) is printed too, so the CPU run shows the projection the GPU run
checks. Last, the **feature cache reader** alone on the CPU (a synthetic cache
of 1024-dim float16 features at 50 Hz, the paper preset's batching, 4 and 16
parallel calls: ``--reader-calls``) in audio seconds per second, against what
the measured stage-1 step and an H100 at 40 % MFU consume. OpenMP workers
sleep when idle, as in the command line (``fairseq2_speechmapper.cli.openmp``).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from argparse import ArgumentParser
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from fairseq2_speechmapper.cli.openmp import configure_openmp  # noqa: E402

configure_openmp()

from benchmarks.common import load_average, log, write_json  # noqa: E402

if TYPE_CHECKING:
    import torch

DENSE_BF16_PEAK_TFLOPS: Final = {
    # Datasheet dense (no sparsity) bf16 tensor-core peaks; the first name
    # that occurs in `torch.cuda.get_device_name()` wins.
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 125.0,
    "RTX 4090": 165.0,
    "V100": 125.0,  # fp16 (V100 has no bf16); the paper's stage-1 card
}

LIBRISPEECH_960_SECONDS: Final = 960 * 3600.0

PAPER_STAGE1_STEPS: Final = 2_000_000

PAPER_STAGE2_BATCHES: Final = 1_000 * 8

ASSUMED_MFU: Final = 0.4
"""For the arithmetic-only projection (a well-fed bf16 Transformer step)."""

H100_PEAK_TFLOPS: Final = DENSE_BF16_PEAK_TFLOPS["H100"]


@dataclass(kw_only=True)
class Shapes:
    mapper_arch: str
    stage1_batch: tuple[int, int]
    """Utterances x frames of cached 50 Hz features."""

    speech_encoder_arch: str
    speech_encoder_batch: tuple[int, int]
    """Utterances x frames of 100 Hz fbanks."""

    it_batch: tuple[int, int]
    prompt_tokens: tuple[int, int]
    """Tokens before and after the speech."""

    response_tokens: int
    transcript_tokens: int
    """Per utterance (LibriSpeech: ~3.5 Llama 3 tokens per second)."""

    llm_vocab_size: int = 128_256
    llm_overrides: dict[str, int] = field(default_factory=dict)


PAPER_SHAPES: Final = Shapes(
    mapper_arch="paper_llama3_8b",
    stage1_batch=(53, 600),
    speech_encoder_arch="600m",
    speech_encoder_batch=(32, 1200),
    it_batch=(12, 600),
    prompt_tokens=(20, 10),
    response_tokens=40,
    transcript_tokens=40,
)

QUICK_SHAPES: Final = Shapes(
    mapper_arch="tiny",
    stage1_batch=(4, 200),
    speech_encoder_arch="tiny",
    speech_encoder_batch=(2, 400),
    it_batch=(2, 200),
    prompt_tokens=(6, 4),
    response_tokens=8,
    transcript_tokens=10,
    llm_vocab_size=1000,
    llm_overrides={
        "model_dim": 64,
        "num_layers": 2,
        "num_attn_heads": 4,
        "num_key_value_heads": 2,
        "ffn_inner_dim": 128,
        "pad_idx": 0,
    },
)


@dataclass(kw_only=True)
class Measurement:
    what: str
    batch: str
    step_s: float
    tflop_per_step: float
    achieved_tflops: float
    mfu: float | None
    audio_s_per_s: float
    gflop_per_audio_s: float
    peak_memory_gib: float | None
    projections_h: dict[str, float]
    """Hours: ``NAME (measured)`` from the step time, ``NAME (H100 at 40% MFU)``
    from the FLOPs alone."""


@dataclass(kw_only=True)
class Bench:
    device: torch.device
    """``meta``: FLOPs only (the paper's shapes on any machine), no timing."""

    peak_tflops: float | None
    num_warmup: int
    num_timed: int

    @property
    def count_only(self) -> bool:
        return self.device.type == "meta"

    @property
    def model_device(self) -> dict[str, Any]:
        """``create_new_model``'s device arguments (it wants a real device)."""
        import torch

        if self.count_only:
            return {"device": torch.device("cpu"), "meta": True}

        return {"device": self.device}

    def autocast(self) -> Any:
        """bf16 autocast, as ``trainer.mixed_precision`` runs a step."""
        import torch

        return torch.autocast("cpu" if self.count_only else self.device.type, dtype=torch.bfloat16)

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_memory(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_gib(self) -> float | None:
        import torch

        if self.device.type != "cuda":
            return None

        return torch.cuda.max_memory_allocated(self.device) / 2**30

    def time_step(self, step: Callable[[], None]) -> tuple[float, float]:
        """The median seconds of ``step`` and its FLOPs (counted on an extra
        step, after the warm-up)."""
        from torch.utils.flop_counter import FlopCounterMode

        if self.count_only:
            with FlopCounterMode(display=False) as counter:
                step()

            return float("nan"), float(counter.get_total_flops())

        for _ in range(self.num_warmup):
            step()

        with FlopCounterMode(display=False) as counter:
            step()

        times = []

        for _ in range(self.num_timed):
            self.sync()
            start = time.perf_counter()
            step()
            self.sync()
            times.append(time.perf_counter() - start)

        return statistics.median(times), float(counter.get_total_flops())

    def measure(
        self, what: str, batch: str, step: Callable[[], None], *, audio_seconds: float, projections: dict[str, float]
    ) -> Measurement:
        """``projections``: name -> audio seconds (an epoch) or, negative,
        a number of steps."""
        seconds, flops = self.time_step(step)

        achieved = flops / seconds / 1e12

        hours = {}

        for name, amount in projections.items():
            # Measured here, then the arithmetic: the FLOPs at 40 % of an H100.
            steps = -amount if amount < 0 else amount / audio_seconds

            if not self.count_only:
                hours[f"{name} (measured)"] = steps * seconds / 3600
            hours[f"{name} (H100 at {ASSUMED_MFU:.0%} MFU)"] = (
                steps * flops / (ASSUMED_MFU * H100_PEAK_TFLOPS * 1e12) / 3600
            )

        return Measurement(
            what=what,
            batch=batch,
            step_s=seconds,
            tflop_per_step=flops / 1e12,
            achieved_tflops=achieved,
            mfu=achieved / self.peak_tflops if self.peak_tflops else None,
            audio_s_per_s=audio_seconds / seconds,
            gflop_per_audio_s=flops / audio_seconds / 1e9,
            peak_memory_gib=self.peak_memory_gib(),
            projections_h=hours,
        )


def random_batch(shapes: tuple[int, int], dim: int, *, transcript_tokens: int, vocab_size: int, device: torch.device):  # type: ignore[no-untyped-def]
    """A :class:`SpeechBatch` of random features (as the feature cache reader
    gives them) with random transcripts."""
    import torch

    from fairseq2_speechmapper.datasets import SpeechBatch

    num_utterances, num_frames = shapes

    generator = torch.Generator().manual_seed(0)

    return SpeechBatch(
        inputs=torch.randn(num_utterances, num_frames, dim, generator=generator).to(device),
        input_lens=[num_frames] * num_utterances,
        texts=["x"] * num_utterances,
        raw_texts=["x"] * num_utterances,
        target_ids=[
            torch.randint(0, vocab_size, (transcript_tokens,), generator=generator) for _ in range(num_utterances)
        ],
        ids=[str(i) for i in range(num_utterances)],
        sources=[f"bench:{i}" for i in range(num_utterances)],
        fields=[{} for _ in range(num_utterances)],
    )


def create_mapper(bench: Bench, arch: str, **overrides: int):  # type: ignore[no-untyped-def]
    from fairseq2_speechmapper.models.speechmapper import get_speechmapper_model_hub

    hub = get_speechmapper_model_hub()

    config = hub.get_arch_config(arch)

    for name, value in overrides.items():
        setattr(config, name, value)

    return hub.create_new_model(config, **bench.model_device).train()


def optimizer_step(bench: Bench, module: Any) -> Callable[[], None]:
    """The recipes' optimizer (``AdamWConfig(lr=1e-4, impl="fused")``); none
    when only counting FLOPs (it has no matrix products)."""
    import torch

    if bench.count_only:
        return lambda: None

    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure_stage1(bench: Bench, shapes: Shapes) -> Measurement:
    import torch

    from fairseq2.metrics import MetricBag

    from fairseq2_speechmapper.features.reader import CachedFeatureEncoder
    from fairseq2_speechmapper.stage1 import (
        Stage1LossSection,
        Stage1Model,
        add_stage1_loss_metrics,
        build_embedding_targets,
        create_stage1_loss,
        sum_kept_loss,
        update_stage1_loss_metrics,
    )

    device = bench.device

    mapper = create_mapper(bench, shapes.mapper_arch)

    num_params = sum(p.numel() for p in mapper.parameters())

    model = Stage1Model(CachedFeatureEncoder(layer=24, output_dim=mapper.input_dim, frame_average=1), mapper)

    # The recipe's float32 copy of the LLM's embedding table.
    embedding_table = torch.randn(shapes.llm_vocab_size, mapper.llm_dim, device=device) * 0.02

    batch = random_batch(
        shapes.stage1_batch,
        mapper.input_dim,
        transcript_tokens=shapes.transcript_tokens,
        vocab_size=shapes.llm_vocab_size,
        device=device,
    )

    loss_fn = create_stage1_loss(Stage1LossSection())

    optimize = optimizer_step(bench, mapper)

    bag = MetricBag(device=device)
    add_stage1_loss_metrics(bag)

    def step() -> None:
        with bench.autocast():
            outputs, output_lens = model(batch)

            targets = build_embedding_targets(batch.target_ids, output_lens, embedding_table, pad_idx=0)

            output = loss_fn(outputs, targets)

            update_stage1_loss_metrics(bag, output, outputs, targets, num_bad_samples=0)

            loss, num_kept = sum_kept_loss(output, targets)

        (loss / num_kept).backward()

        optimize()

    num_utterances, num_frames = shapes.stage1_batch

    audio_seconds = num_utterances * num_frames / 50

    bench.reset_memory()

    return bench.measure(
        f"stage 1 step, {shapes.mapper_arch} mapper ({num_params / 1e6:.3g}M), cached features, bf16 autocast",
        f"{num_utterances} x {num_frames / 50:g} s",
        step,
        audio_seconds=audio_seconds,
        projections={
            "LibriSpeech 960 h epoch": LIBRISPEECH_960_SECONDS,
            "paper stage 1 (2M steps)": -PAPER_STAGE1_STEPS,
        },
    )


def measure_speech_encoder(bench: Bench, shapes: Shapes) -> Measurement:
    import torch

    from fairseq2.nn import BatchLayout

    from fairseq2_speechmapper.models.w2vbert2 import get_w2vbert2_model_hub
    from fairseq2_speechmapper.speech_encoders.w2vbert2 import W2VBert2SpeechEncoder

    device = bench.device

    hub = get_w2vbert2_model_hub()

    config = hub.get_arch_config(shapes.speech_encoder_arch)

    model = hub.create_new_model(config, dtype=torch.bfloat16, **bench.model_device).eval()

    layer = min(24, config.num_encoder_layers)

    encoder = W2VBert2SpeechEncoder(model, layer=layer)

    num_utterances, num_frames = shapes.speech_encoder_batch

    fbanks = torch.randn(num_utterances, num_frames, config.num_fbank_channels, device=device, dtype=torch.bfloat16)

    layout = BatchLayout.of(fbanks, [num_frames] * num_utterances)

    def step() -> None:
        with torch.inference_mode():
            encoder(fbanks, layout)

    bench.reset_memory()

    return bench.measure(
        f"speech encoder extraction, w2v-BERT 2.0 {shapes.speech_encoder_arch} to layer {layer}, bf16",
        f"{num_utterances} x {num_frames / 100:g} s",
        step,
        audio_seconds=num_utterances * num_frames / 100,
        projections={"LibriSpeech 960 h extraction": LIBRISPEECH_960_SECONDS},
    )


def measure_it_step(bench: Bench, shapes: Shapes) -> Measurement:
    import torch

    from fairseq2.models.llama import get_llama_model_hub

    from fairseq2_speechmapper.features.reader import CachedFeatureEncoder
    from fairseq2_speechmapper.recipes.instruct.criterion import InstructLoss
    from fairseq2_speechmapper.speech_llm import SpeechLLM
    from fairseq2_speechmapper.speech_llm.chat import ChatTemplate, SpeechPrompt
    from fairseq2_speechmapper.stage1 import Stage1LossSection, create_stage1_loss

    device = bench.device

    hub = get_llama_model_hub()

    llm_config = hub.get_arch_config("llama3_1_8b")

    llm_config.vocab_size = shapes.llm_vocab_size

    for name, value in shapes.llm_overrides.items():
        setattr(llm_config, name, value)

    llm = hub.create_new_model(llm_config, dtype=torch.bfloat16, **bench.model_device).eval()

    llm.requires_grad_(False)

    mapper = create_mapper(bench, shapes.mapper_arch, llm_dim=llm_config.model_dim)

    # The chat template only tokenises; the prompts here are random token ids.
    model = SpeechLLM(
        CachedFeatureEncoder(layer=24, output_dim=mapper.input_dim, frame_average=1),
        mapper,
        llm,
        cast(ChatTemplate, None),
    )

    batch = random_batch(
        shapes.it_batch, mapper.input_dim, transcript_tokens=shapes.transcript_tokens, vocab_size=1, device=device
    )

    generator = torch.Generator().manual_seed(1)

    def tokens(n: int) -> torch.Tensor:
        return torch.randint(0, shapes.llm_vocab_size, (n,), generator=generator)

    num_utterances, num_frames = shapes.it_batch

    before, after = shapes.prompt_tokens

    prompts = [SpeechPrompt(tokens(before), tokens(after)) for _ in range(num_utterances)]

    responses = [tokens(shapes.response_tokens) for _ in range(num_utterances)]

    loss_fn = InstructLoss(sigma=0.0, stage1_loss=create_stage1_loss(Stage1LossSection()))

    optimize = optimizer_step(bench, mapper)

    def step() -> None:
        with bench.autocast():
            mapped = model.map_speech(batch)

            response = model.response_logits(model.build_prefixes(mapped, prompts), responses)

            output = loss_fn(response)

        (output.loss / output.num_response_tokens).backward()

        optimize()

    num_llm_params = sum(p.numel() for p in llm.parameters())

    bench.reset_memory()

    return bench.measure(
        f"IT step, frozen llama3_1_8b-shaped LLM ({num_llm_params / 1e9:.3g}B, bf16) + {shapes.mapper_arch} mapper",
        f"{num_utterances} x {num_frames / 50:g} s + {before + after} prompt + {shapes.response_tokens} response tokens",
        step,
        audio_seconds=num_utterances * num_frames / 50,
        projections={"paper stage 2 (1K steps x 8)": -PAPER_STAGE2_BATCHES},
    )


@dataclass(kw_only=True)
class ReaderMeasurement:
    what: str
    audio_s_per_s: float
    feature_mb_per_s: float
    num_batches: int
    seconds: float


def write_synthetic_cache(directory: Path, *, num_utterances: int, durations: tuple[float, float], seed: int) -> None:
    """A feature cache written as ``extract-features`` writes it (its
    :class:`FeatureCacheWriter`: header, plan, shards of 100 utterances with
    their index and checksums), of random w2v-BERT-2.0-shaped float16 features
    (1024 dims, 50 Hz), without running a speech encoder."""
    import random

    import torch

    from fairseq2_speechmapper.datasets import SpeechReadOptions
    from fairseq2_speechmapper.features.cache import FeatureCache, FeatureCacheHeader
    from fairseq2_speechmapper.features.writer import FeatureCacheWriter, pending_shards

    header = FeatureCacheHeader(
        speech_encoder="w2vbert2_600m",
        speech_encoder_checkpoint=None,
        layer=24,
        last_layer=False,
        speech_encoder_options={},
        speech_encoder_dtype="bfloat16",
        frame_average=1,
        dtype="float16",
        feature_dim=1024,
    )

    writer = FeatureCacheWriter(FeatureCache(directory, header), rank=0, shard_size=100)

    writer.write_or_check_header()

    rng = random.Random(seed)

    lengths = [round(rng.uniform(*durations) * 50) for _ in range(num_utterances)]

    examples: list[dict[str, object]] = [
        {"id": str(i), "source": f"synthetic:{i}", "duration": frames / 50, "text": "a b c", "fields": "{}"}
        | {"audio_path": "", "offset": 0.0}
        for i, frames in enumerate(lengths)
    ]

    options = SpeechReadOptions(min_duration=durations[0], max_duration=durations[1])

    plan = writer.plan_split("train", examples, manifest=Path("synthetic"), section=options)

    shards, _ = pending_shards(plan, examples, list(range(plan.num_shards)), options)

    generator = torch.Generator().manual_seed(seed)

    for shard in shards.values():
        for position, example in enumerate(shard.examples):
            frames = round(float(example["duration"]) * 50)  # type: ignore[arg-type]

            writer.add_features(shard, position, torch.randn(frames, 1024, generator=generator), example["source"])

        writer.write_shard(shard)


def measure_readers(*, quick: bool, num_batches: int, parallel_calls: list[int]) -> list[ReaderMeasurement]:
    """The pretraining reader over a feature cache, alone on the CPU, with the
    paper preset's batching (640 s, 64 utterances), per number of parallel
    calls (the default: 4)."""
    import tempfile

    import torch

    from fairseq2.gang import create_fake_gangs

    from fairseq2_speechmapper.datasets import SpeechReadOptions
    from fairseq2_speechmapper.features.reader import FeatureCacheDataset

    durations = (2.0, 8.0) if quick else (10.0, 16.0)

    measurements = []

    with tempfile.TemporaryDirectory(prefix="benchmark-gpu-reader-") as tmp:
        write_synthetic_cache(Path(tmp), num_utterances=80 if quick else 400, durations=durations, seed=0)

        dataset = FeatureCacheDataset.open(Path(tmp))

        for num_parallel_calls in parallel_calls:
            options = SpeechReadOptions(
                min_duration=durations[0],
                max_duration=durations[1],
                max_batch_seconds=640.0,
                max_batch_size=64,
                num_parallel_calls=num_parallel_calls,
            )

            reader = dataset.create_reader(
                "train",
                create_fake_gangs(torch.device("cpu")),
                options,
                prepare_input=None,
                encode_text=lambda text: torch.tensor([1, 2, 3]),
                training=True,
                seed=0,
            )

            (batch,) = next(reader)  # start-up (threads, shard mapping) is not throughput

            audio_seconds, num_bytes = 0.0, 0

            start = time.perf_counter()

            for _ in range(num_batches):
                try:
                    (batch,) = next(reader)
                except StopIteration:  # a pass's end: the trainer resets the reader there too
                    reader.reset()

                    (batch,) = next(reader)

                audio_seconds += sum(batch.input_lens) / 50
                num_bytes += sum(batch.input_lens) * 1024 * 2

            seconds = time.perf_counter() - start

            del reader

            measurements.append(
                ReaderMeasurement(
                    what=f"feature cache reader, 1024-dim float16 features, {num_parallel_calls} parallel calls, CPU ({os.cpu_count()} cores)",
                    audio_s_per_s=audio_seconds / seconds,
                    feature_mb_per_s=num_bytes / seconds / 1e6,
                    num_batches=num_batches,
                    seconds=seconds,
                )
            )

    return measurements


def dense_bf16_peak_tflops(device: torch.device, override: float | None) -> float | None:
    import torch

    if override is not None:
        return override

    if (env := os.environ.get("PEAK_TFLOPS")) and device.type == "cuda":
        return float(env)

    if device.type != "cuda":
        return None

    name = torch.cuda.get_device_name(device)

    return next((peak for key, peak in DENSE_BF16_PEAK_TFLOPS.items() if key in name), None)


def print_table(title: str, rows: list[Measurement]) -> None:
    print(f"\n{title}\n")

    for row in rows:
        print(f"{row.what}\n  batch {row.batch}")

        flops = f"{row.tflop_per_step * 1000:,.3g} GFLOP/step ({row.gflop_per_audio_s:,.3g} GFLOP per audio s)"

        if math.isnan(row.step_s):
            print(f"  {flops}")
        else:
            mfu = f"{row.mfu:.1%}" if row.mfu is not None else "n/a"
            memory = f"{row.peak_memory_gib:.1f} GiB" if row.peak_memory_gib is not None else "n/a"

            print(
                f"  step {row.step_s * 1000:,.1f} ms | {flops} | {row.achieved_tflops:,.3g} TFLOP/s | MFU {mfu} "
                f"| {row.audio_s_per_s:,.0f} audio s/s | peak memory {memory}"
            )

        for name, hours in row.projections_h.items():
            print(f"  {name}: {hours:,.3g} h")


def main() -> int:
    parser = ArgumentParser(description="SpeechMapper's steps at the paper's shapes on one accelerator.")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 1 + 2 steps (the CPU smoke test)")
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device (MFU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 3; --quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; --quick 2)")
    parser.add_argument(
        "--only",
        choices=["stage1", "speech_encoder", "it", "reader"],
        nargs="+",
        default=["stage1", "speech_encoder", "it", "reader"],
    )
    parser.add_argument(
        "--reader-calls",
        type=int,
        nargs="+",
        default=None,
        help="the reader's parallel calls (default 4 16; --quick 4)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the measurements here")
    args = parser.parse_args()

    import torch

    from fairseq2 import init_fairseq2

    start = time.perf_counter()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    init_fairseq2()

    bench = Bench(
        device=device,
        peak_tflops=dense_bf16_peak_tflops(device, args.peak_tflops),
        num_warmup=args.warmup if args.warmup is not None else (1 if args.quick else 3),
        num_timed=args.steps if args.steps is not None else (2 if args.quick else 10),
    )

    shapes = QUICK_SHAPES if args.quick else PAPER_SHAPES

    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    )

    log(f"gpu.py on {device_name}, torch {torch.__version__}, {'quick' if args.quick else 'paper'} shapes")

    measurements = {"stage1": measure_stage1, "speech_encoder": measure_speech_encoder, "it": measure_it_step}

    rows, errors = [], {}

    # The paper's shapes on the meta device: their FLOPs on any machine.
    arithmetic = Bench(device=torch.device("meta"), peak_tflops=None, num_warmup=0, num_timed=0)

    arithmetic_rows = []

    for name in [n for n in args.only if n != "reader"]:
        for which, on, at, into in (
            ("measured", bench, shapes, rows),
            ("arithmetic", arithmetic, PAPER_SHAPES, arithmetic_rows),
        ):
            log(f"  {name} ({which}) ...")

            try:
                into.append(measurements[name](on, at))
            except Exception as ex:  # one failing measurement (e.g. out of memory) must not hide the others
                errors[f"{name} ({which})"] = f"{type(ex).__name__}: {ex}"

                log(f"  {name} ({which}) FAILED: {errors[f'{name} ({which})']}")

        if device.type == "cuda":
            torch.cuda.empty_cache()

    readers = []

    if "reader" in args.only:
        log("  reader ...")

        try:
            readers = measure_readers(
                quick=args.quick,
                num_batches=10 if args.quick else 40,
                parallel_calls=args.reader_calls or ([4] if args.quick else [4, 16]),
            )
        except Exception as ex:
            errors["reader"] = f"{type(ex).__name__}: {ex}"

            log(f"  reader FAILED: {errors['reader']}")

    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    print_table(
        f"Measured on {device_name}, {'quick' if args.quick else 'paper'} shapes ({date}, random weights):", rows
    )

    print_table(
        f"Arithmetic at the paper's shapes (FLOPs counted on the meta device; hours at {ASSUMED_MFU:.0%} MFU of an H100, {H100_PEAK_TFLOPS:g} TFLOP/s bf16):",
        arithmetic_rows,
    )

    for reader in readers:
        print(
            f"\n{reader.what}: {reader.audio_s_per_s:,.0f} audio s/s, {reader.feature_mb_per_s:,.0f} MB/s of features ({reader.num_batches} batches in {reader.seconds:.1f} s)"
        )

        for row in rows[:1] if rows and rows[0].what.startswith("stage 1") else []:
            print(
                f"  the stage-1 step measured above consumes {row.audio_s_per_s:,.0f} audio s/s: the reader delivers "
                f"{reader.audio_s_per_s / row.audio_s_per_s:.2f}x that"
            )

        for row in arithmetic_rows[:1] if arithmetic_rows and arithmetic_rows[0].what.startswith("stage 1") else []:
            consumed = ASSUMED_MFU * H100_PEAK_TFLOPS * 1e3 / row.gflop_per_audio_s

            print(
                f"  the paper's stage-1 step on an H100 at {ASSUMED_MFU:.0%} MFU would consume {consumed:,.0f} audio s/s: "
                f"the reader delivers {reader.audio_s_per_s / consumed:.2f}x that"
            )

    print(f"\nTotal {time.perf_counter() - start:.0f} s. Load average at the end: {load_average()}.")

    write_json(
        args.json,
        {
            "device": device_name,
            "torch": torch.__version__,
            "peak_tflops": bench.peak_tflops,
            "shapes": asdict(shapes),
            "measurements": [asdict(row) for row in rows],
            "arithmetic": [asdict(row) for row in arithmetic_rows],
            "readers": [asdict(reader) for reader in readers],
            "errors": errors,
        },
    )

    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
