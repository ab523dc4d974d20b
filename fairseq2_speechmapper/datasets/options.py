"""How a split is read into batches (the duration limits, the batch budget,
bucketing, shuffling, bad samples) and what the duration limits leave out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import final, get_args

from fairseq2.logging import log
from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.datasets.manifest import OnBadSample
from fairseq2_speechmapper.datasets.text import TextNormalizationConfig


@dataclass(kw_only=True)
class SpeechReadOptions:
    """How a split is read into batches."""

    min_duration: float = 0.1
    """Utterances shorter than this (in seconds) are left out."""

    max_duration: float = 30.0
    """Utterances longer than this (in seconds) are left out."""

    max_left_out_share: float = 0.05
    """Warn when the duration limits leave out more than this share of a
    split's utterances (the count and share are always logged and recorded in
    ``metrics/data.jsonl``)."""

    max_batch_seconds: float = 320.0
    """The batch budget: batch size × longest utterance, in seconds of audio."""

    max_batch_size: int = 64
    """The most utterances per batch."""

    sort_window: int = 2000
    """Utterances sorted by length together to form batches of similar length
    (length bucketing); ``1`` turns bucketing off."""

    shuffle: bool = True
    """Shuffle utterances every epoch and batches within ``batch_shuffle_window``
    (training splits only; validation always reads in manifest order)."""

    batch_shuffle_window: int = 100

    num_parallel_calls: int = 4
    """Utterances decoded in parallel."""

    num_prefetch: int = 4
    """Batches prepared ahead of the training step."""

    on_bad_sample: OnBadSample = "error"
    """``error``: stop with a one-line error naming the manifest line and file;
    ``skip``: skip the utterance and count it (metric ``num_bad_samples``)."""

    convert_audio: bool = True
    """Resample to 16 kHz and downmix to mono; if ``False``, other audio is a
    bad sample."""

    check_audio_files: bool = True
    """Check at start-up that every audio file exists and is not empty."""

    check_features: bool = True
    """Reading a feature cache, check each utterance's features against the
    checksum written with them (CRC-32: 14-56 % more reader time on a busy
    2-core CPU; ``benchmarks/README.md``). ``extract-features --config
    verify=true`` checks a whole cache."""

    log_shard: bool = False
    """Log the utterance ids of every batch this rank reads (to check sharding)."""

    text: TextNormalizationConfig = field(default_factory=TextNormalizationConfig)

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if not 0.0 <= self.min_duration <= self.max_duration:
            result.add_error(
                f"`min_duration` ({self.min_duration} s) must be between 0 and `max_duration` ({self.max_duration} s)."
            )

        if not 0.0 <= self.max_left_out_share <= 1.0:
            result.add_error(f"`max_left_out_share` must be between 0 and 1, but is {self.max_left_out_share}.")

        if self.max_duration > self.max_batch_seconds:
            result.add_error(
                f"`max_duration` ({self.max_duration} s) must not exceed `max_batch_seconds` ({self.max_batch_seconds} s), or the longest utterances fit no batch."
            )

        if self.on_bad_sample not in get_args(OnBadSample):
            result.add_error(f"`on_bad_sample` must be `error` or `skip`, but is {self.on_bad_sample!r}.")

        return result

    def accepts_duration(self, duration: float) -> bool:
        return self.min_duration <= duration <= self.max_duration


@final
@dataclass(kw_only=True)
class LeftOutByDuration:
    """The utterances of a split that the duration limits left out."""

    split: str

    num_utterances: int
    """The split's utterances before the limits."""

    num_left_out: int

    hours_left_out: float

    @property
    def share(self) -> float:
        return self.num_left_out / max(self.num_utterances, 1)

    def metric_values(self) -> dict[str, object]:
        return {
            "split": self.split,
            "num_utterances": self.num_utterances,
            "num_left_out_by_duration": self.num_left_out,
            "share_left_out_by_duration": self.share,
            "hours_left_out_by_duration": self.hours_left_out,
        }


def count_left_out(split: str, durations: Sequence[float], options: SpeechReadOptions) -> LeftOutByDuration:
    """Counts what the duration limits leave out of ``durations``; warns in one
    line when it is more than ``options.max_left_out_share``."""
    left_out = [d for d in durations if not options.accepts_duration(d)]

    report = LeftOutByDuration(
        split=split, num_utterances=len(durations), num_left_out=len(left_out), hours_left_out=sum(left_out) / 3600
    )

    if report.share > options.max_left_out_share:
        log.warning(
            "Split `{}`: the duration limits {}-{} s leave out {} of {} utterances ({:.1%}, {:.2f} h), more than `dataset.max_left_out_share` ({:.1%}); widen `dataset.min_duration`/`max_duration` to keep them.",
            split,
            options.min_duration,
            options.max_duration,
            report.num_left_out,
            report.num_utterances,
            report.share,
            report.hours_left_out,
            options.max_left_out_share,
        )

    return report
