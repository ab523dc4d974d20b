"""The size of the data reader's checkpoint state (``reader.state_dict()``,
pickled), at the demo's and the paper's batch shapes.

Run from the repository root::

    .venv/bin/python -m benchmarks.reader_state [--settle SECONDS]

Synthetic utterances (zero features of the shape a feature cache holds,
float16, 50 frames per second or 25 with frame averaging 2) go through the
speech reader (:class:`SpeechDataReader`) as a training run reads them:
length bucketing, batch shuffling, ``num_prefetch=4`` (the default). After a
few batches the prefetcher gets ``--settle`` seconds to fill up, then the
state the trainer writes into every checkpoint is pickled and measured, and
a new reader restored from it reads its first batch.

Before the reader kept its position (fairseq2n's pipeline state, with the
prefetched, decoded batches): 17.0 MB at the demo's shapes, 326 MB at the
paper's (164 MB frame-averaged) per rank per checkpoint.
"""

from __future__ import annotations

import pickle
import time
from argparse import ArgumentParser
from dataclasses import dataclass

import torch

from fairseq2.datasets import DataReader
from fairseq2.gang import create_fake_gangs

from fairseq2_speechmapper.datasets import SpeechBatch, SpeechDataReader, SpeechReadOptions


@dataclass(kw_only=True)
class Shape:
    name: str
    feature_dim: int
    frames_per_second: float
    durations: tuple[float, ...]
    """Utterance durations, cycled over the split."""
    options: SpeechReadOptions


SHAPES = [
    # Whisper tiny features; the demo preset's batches.
    Shape(
        name="demo (Whisper tiny, 384 dims, 50 Hz; 24 utt / 120 s)",
        feature_dim=384,
        frames_per_second=50.0,
        durations=(2.0, 3.0, 4.0, 5.0, 6.0),
        options=SpeechReadOptions(max_batch_seconds=120.0, max_batch_size=24, sort_window=400, num_parallel_calls=2),
    ),
    # w2v-BERT 2.0 features; 53 x 12 s batches (the paper preset's 640 s budget).
    Shape(
        name="paper (w2v-BERT 2.0, 1024 dims, 50 Hz; 53 x 12 s)",
        feature_dim=1024,
        frames_per_second=50.0,
        durations=(12.0,),
        options=SpeechReadOptions(max_batch_seconds=640.0, max_batch_size=64, sort_window=2000),
    ),
    Shape(
        name="paper, frame-averaged (1024 dims, 25 Hz; 53 x 12 s)",
        feature_dim=1024,
        frames_per_second=25.0,
        durations=(12.0,),
        options=SpeechReadOptions(max_batch_seconds=640.0, max_batch_size=64, sort_window=2000),
    ),
]


def measure(shape: Shape, *, num_utterances: int, settle: float) -> tuple[int, float, float, float]:
    """The pickled state's bytes, the seconds ``state_dict()`` took, and the
    seconds to the first batch of a new reader and of one restored from the
    state (which skips what was read)."""
    examples: list[dict[str, object]] = [
        {
            "id": f"u{i}",
            "duration": shape.durations[i % len(shape.durations)],
            "text": "a",
            "source": f"train.jsonl:{i + 1}",
            "fields": "{}",
        }
        for i in range(num_utterances)
    ]

    def load_example(example: dict[str, object]) -> dict[str, object]:
        num_frames = int(float(example["duration"]) * shape.frames_per_second)  # type: ignore[arg-type]

        return {**example, "inputs": torch.zeros((num_frames, shape.feature_dim), dtype=torch.float16)}

    def create_reader() -> DataReader[SpeechBatch]:
        return SpeechDataReader(
            examples,
            "train",
            create_fake_gangs(torch.device("cpu")),
            shape.options,
            load_example=load_example,
            encode_text=lambda text: torch.tensor([1]),
            training=True,
            seed=2,
        )

    start = time.perf_counter()

    reader = create_reader()

    next(reader)

    first_batch = time.perf_counter() - start

    for _ in range(2):
        next(reader)

    time.sleep(settle)

    start = time.perf_counter()

    state = reader.state_dict()

    elapsed = time.perf_counter() - start

    del reader

    start = time.perf_counter()

    restored = create_reader()

    restored.load_state_dict(state)

    next(restored)

    first_restored_batch = time.perf_counter() - start

    return len(pickle.dumps(state)), elapsed, first_batch, first_restored_batch


def main() -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settle", type=float, default=3.0, help="seconds the prefetcher gets to fill up")
    parser.add_argument("--utterances", type=int, default=2000, help="utterances in the synthetic split")
    args = parser.parse_args()

    torch.set_num_threads(1)

    print("| shape | reader state (pickled) | state_dict() | first batch: new reader | restored reader |")
    print("|---|---|---|---|---|")

    for shape in SHAPES:
        num_bytes, seconds, first, restored = measure(shape, num_utterances=args.utterances, settle=args.settle)

        print(
            f"| {shape.name} | {num_bytes / 1e6:,.3f} MB ({num_bytes:,} bytes) | {seconds * 1e3:.1f} ms "
            f"| {first * 1e3:.0f} ms | {restored * 1e3:.0f} ms |",
            flush=True,
        )

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
