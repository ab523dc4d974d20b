"""Decodes one manifest utterance into the speech encoder's input, with
fairseq2's native audio decoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, final

import torch
import torchaudio.functional
from torch import Tensor

from fairseq2.data.audio import AudioDecoder
from fairseq2.data.data_pipeline import FileMapper

from fairseq2_speechmapper.errors import SpeechMapperError

SAMPLE_RATE: Final = 16_000

# Manifest durations are rounded; a file this much shorter than its manifest
# entry says is truncated.
_TRUNCATION_TOLERANCE_SECONDS: Final = 0.1


class BadSampleError(SpeechMapperError):
    """An utterance cannot be used; the message names the manifest line and
    the audio file."""


InputPreparer = Callable[[Tensor, int], Tensor]
"""The speech encoder's frontend: a 16 kHz mono waveform in, its input out."""


@final
class UtteranceLoader:
    """Turns a manifest example into the speech encoder's input.

    Adds ``inputs`` (the prepared input) to the example, or ``error`` (a
    one-line reason naming the manifest line and file) when the utterance is
    bad. It never raises for a bad utterance: it runs as a map function of a
    fairseq2 data pipeline, and fairseq2n keeps a failed map function's error
    and raises it again from ``state_dict()``, so a bad file read ahead by the
    prefetcher would fail the trainer's next checkpoint. The reader decides,
    on the main thread, whether ``error`` stops the run or is skipped.
    """

    def __init__(self, prepare_input: InputPreparer, *, convert_audio: bool) -> None:
        """
        :param convert_audio: Resample to 16 kHz and downmix to mono; if
            ``False``, audio in another format is a bad sample.
        """
        self._prepare_input = prepare_input
        self._convert_audio = convert_audio
        self._file_mapper = FileMapper(cached_fd_count=64)
        self._audio_decoder = AudioDecoder(dtype=torch.float32)

    def __call__(self, example: dict[str, object]) -> dict[str, object]:
        # Bad as written in the manifest.
        if "error" in example:
            return example

        try:
            example["inputs"] = self._load(example)
        except BadSampleError as ex:
            example["error"] = str(ex)

        return example

    def _load(self, example: dict[str, object]) -> Tensor:
        source, audio_path = example["source"], example["audio_path"]

        def bad(reason: str) -> BadSampleError:
            return BadSampleError(f"{source}: {audio_path}: {reason}")

        try:
            decoded = self._audio_decoder(self._file_mapper(audio_path)["data"])  # type: ignore[arg-type]
        except Exception as ex:  # fairseq2n raises plain errors for unreadable files
            raise bad(f"cannot be decoded as audio ({_first_line(_innermost_cause(ex))}).") from None

        waveform: Tensor = decoded["waveform"]

        sample_rate = int(decoded["sample_rate"])

        num_channels = 1 if waveform.dim() == 1 else waveform.size(1)

        if not self._convert_audio:
            if sample_rate != SAMPLE_RATE:
                raise bad(
                    f"is sampled at {sample_rate} Hz, but 16 kHz is expected (or set `dataset.convert_audio=true`)."
                )

            if num_channels != 1:
                raise bad(f"has {num_channels} channels, but mono is expected (or set `dataset.convert_audio=true`).")

        if num_channels != 1:
            waveform = waveform.mean(dim=1)

        offset, duration = float(example["offset"]), float(example["duration"])  # type: ignore[arg-type]

        file_duration = waveform.size(0) / sample_rate

        if waveform.size(0) == 0:
            raise bad("holds no audio samples.")

        if file_duration + _TRUNCATION_TOLERANCE_SECONDS < offset + duration:
            raise bad(
                f"holds {file_duration:.2f} s of audio, but the manifest asks for {offset:.2f} s + {duration:.2f} s: the file is truncated or the manifest is wrong."
            )

        # A line that stands for the whole file (a TSV line without a start
        # sample) gives its exact length: a shorter one would cut the audio.
        if example.get("whole_file") and file_duration - _TRUNCATION_TOLERANCE_SECONDS > duration:
            raise bad(
                f"holds {file_duration:.2f} s of audio, but the manifest says {duration:.2f} s: the sample count is wrong."
            )

        start, end = round(offset * sample_rate), round((offset + duration) * sample_rate)

        waveform = waveform[start:end]

        if not torch.isfinite(waveform).all():
            raise bad("holds NaN or infinite samples.")

        if sample_rate != SAMPLE_RATE:
            waveform = torchaudio.functional.resample(waveform, sample_rate, SAMPLE_RATE)

        try:
            return self._prepare_input(waveform, SAMPLE_RATE)
        except ValueError as ex:
            raise bad(_first_line(ex)) from None


def _innermost_cause(ex: BaseException) -> BaseException:
    """fairseq2n puts libsndfile's own reason in the innermost cause."""
    while (cause := ex.__cause__ or ex.__context__) is not None:
        ex = cause

    return ex


def _first_line(ex: BaseException) -> str:
    lines = str(ex).strip().splitlines()

    return lines[0] if lines else type(ex).__name__
