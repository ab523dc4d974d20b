"""What a feature cache costs on disk, per audio hour and per storage dtype."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, final

import torch

from fairseq2.logging import log

from fairseq2_speechmapper.features.cache import FeatureCache

_STORAGE_DTYPES: Final = (torch.float16, torch.bfloat16, torch.float32)


@final
@dataclass(kw_only=True)
class StorageReport:
    num_utterances: int

    audio_seconds: float

    num_frames: int
    """Stored frames (after frame averaging)."""

    feature_dim: int

    num_bytes: int
    """The shards and their indices on disk."""

    dtype: str
    """The storage dtype."""

    @property
    def audio_hours(self) -> float:
        return self.audio_seconds / 3600

    @property
    def bytes_per_audio_hour(self) -> float:
        return self.num_bytes / self.audio_hours if self.audio_seconds else 0.0

    @property
    def frames_per_second(self) -> float:
        return self.num_frames / self.audio_seconds if self.audio_seconds else 0.0

    def feature_bytes_per_audio_hour(self, dtype: torch.dtype) -> float:
        """The features alone, had they been stored as ``dtype``."""
        return self.frames_per_second * 3600 * self.feature_dim * dtype.itemsize

    def summary_lines(self) -> list[str]:
        per_dtype = ", ".join(
            f"{str(dtype).removeprefix('torch.')} {_megabytes(self.feature_bytes_per_audio_hour(dtype))}"
            for dtype in _STORAGE_DTYPES
        )

        return [
            (
                f"{self.num_utterances} utterances, {self.audio_hours:.3f} audio hours, {self.num_frames} frames "
                f"({self.frames_per_second:.1f} per audio second) x {self.feature_dim} dims as {self.dtype}: "
                f"{_megabytes(self.num_bytes)} on disk, {_megabytes(self.bytes_per_audio_hour)} per audio hour."
            ),
            (
                f"Features per audio hour by storage dtype: {per_dtype} "
                f"(1000 h: {_gigabytes(1000 * self.feature_bytes_per_audio_hour(torch.float16))} as float16)."
            ),
        ]


def measure_storage(cache: FeatureCache, splits: Sequence[str]) -> StorageReport:
    """Reads the finished ``splits`` of ``cache`` (checking every shard)."""
    num_utterances, audio_seconds, num_frames, num_bytes = 0, 0.0, 0, 0

    for split in splits:
        cache_split = cache.read_split(split)

        # The bad utterances skipped at extraction hold no features.
        examples = [e for e in cache_split.examples if "error" not in e]

        num_utterances += len(examples)

        audio_seconds += sum(float(e["duration"]) for e in examples)  # type: ignore[arg-type, misc]

        num_frames += sum(int(e["frames"]) for e in examples)  # type: ignore[call-overload]

        num_bytes += sum(p.stat().st_size for p in cache_split.directory.glob("shard_*") if not p.name.endswith(".tmp"))

    return StorageReport(
        num_utterances=num_utterances,
        audio_seconds=audio_seconds,
        num_frames=num_frames,
        feature_dim=cache.header.feature_dim,
        num_bytes=num_bytes,
        dtype=cache.header.dtype,
    )


def log_storage(cache: FeatureCache, splits: Sequence[str]) -> None:
    """Logs what the finished ``splits`` of ``cache`` cost on disk."""
    log.info("Feature cache {} ({}):", cache.directory, ", ".join(splits))

    for line in measure_storage(cache, splits).summary_lines():
        log.info("  {}", line)


def _megabytes(num_bytes: float) -> str:
    return f"{num_bytes / 1e6:,.1f} MB"


def _gigabytes(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:,.1f} GB"
