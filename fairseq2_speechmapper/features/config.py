from __future__ import annotations

from dataclasses import dataclass

import torch

from fairseq2.data_type import DataType
from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.speech_encoders import SpeechEncoderOptions, WhisperWindow


@dataclass(kw_only=True)
class SpeechEncoderSection:
    """The frozen speech encoder (the paper's speech foundation model, SFM) and
    the features taken from it."""

    name: str = "w2vbert2_600m"
    """The speech encoder's asset card."""

    layer: int | None = 24
    """The encoder layer (1-based) whose output the mapper reads; ``None`` for the last."""

    dtype: DataType = torch.float32
    """The speech encoder's compute dtype (``bfloat16``/``float16`` on GPUs)."""

    whisper_window: WhisperWindow = "30s"
    """Whisper encoders only: ``30s`` encodes every utterance in Whisper's
    fixed 30 s window, as it was trained; ``utterance`` in a window as long as
    the utterance (far cheaper for short utterances, not how Whisper was trained)."""

    def encoder_options(self) -> SpeechEncoderOptions:
        return SpeechEncoderOptions(whisper_window=self.whisper_window)

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if not self.name:
            result.add_error("`name` must name the speech encoder's asset card.")

        if self.layer is not None and self.layer < 1:
            result.add_error(f"`layer` must be at least 1 (1-based) or null for the last, but is {self.layer}.")

        return result


@dataclass(kw_only=True)
class FeatureStorageSection:
    """How ``extract-features`` stores the features."""

    dtype: DataType = torch.float16
    """``float16`` (half of ``float32``), ``bfloat16`` (float32's range) or ``float32``."""

    frame_average: int = 1
    """Consecutive frames averaged into one before storing (1 = none). A cache
    averaged over k frames feeds mappers whose ``frame_average`` is a multiple
    of k; 2 halves the paper's storage (its mapper averages 2 frames)."""

    shard_size: int = 500
    """Utterances per shard: the unit of work of a rank, and of resuming."""

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if self.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            result.add_error(f"`dtype` must be float16, bfloat16 or float32, but is {self.dtype}.")

        if self.frame_average < 1:
            result.add_error(f"`frame_average` must be at least 1, but is {self.frame_average}.")

        if self.shard_size < 1:
            result.add_error(f"`shard_size` must be at least 1, but is {self.shard_size}.")

        return result
