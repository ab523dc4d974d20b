"""Speech manifests in the formats users already have: NeMo-style JSONL and
fairseq's TSV (audio root line, ``path<TAB>n_samples``, transcripts beside it)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, final

from fairseq2.logging import log

from fairseq2_speechmapper.errors import SpeechMapperError

OnBadSample = Literal["error", "skip"]

MANIFEST_SUFFIXES: Final = (".jsonl", ".tsv")

# fairseq's TSV manifests count samples at this rate.
TSV_SAMPLE_RATE: Final = 16_000

# Fields of a JSONL line that the reader interprets; all others are kept as they
# are for later stages (``lang``, ``translation``, ``tgt_lang``, ``question``, ...).
_JSONL_KNOWN_FIELDS: Final = frozenset(("audio_filepath", "duration", "offset", "text", "id"))


class ManifestError(SpeechMapperError):
    """A manifest or one of its lines cannot be used; the message names the
    file and line."""


@final
@dataclass(kw_only=True)
class ManifestRecord:
    """One utterance of a manifest."""

    id: str

    audio_path: str
    """The absolute path of the audio file."""

    offset: float
    """The start of the utterance in the audio file, in seconds."""

    duration: float
    """The length of the utterance, in seconds."""

    text: str
    """The transcript, as written in the manifest (not normalised)."""

    source: str
    """``manifest:line``, for error messages."""

    fields: dict[str, object] = field(default_factory=dict)
    """The manifest line's other fields, kept for later stages."""

    whole_file: bool = False
    """The line stands for the whole audio file, whose length ``duration``
    then is (a TSV line without a start sample)."""

    def as_example(self) -> dict[str, object]:
        """Returns the record as a data-pipeline example (plain values only)."""
        example: dict[str, object] = {
            "id": self.id,
            "audio_path": self.audio_path,
            "offset": self.offset,
            "duration": self.duration,
            "text": self.text,
            "source": self.source,
            "fields": json.dumps(self.fields, ensure_ascii=False),
        }

        # Only where set: feature caches hash these examples.
        if self.whole_file:
            example["whole_file"] = True

        return example


@final
@dataclass(kw_only=True)
class Manifest:
    path: Path

    records: list[ManifestRecord]

    bad_lines: dict[str, str] = field(default_factory=dict)
    """The lines skipped as bad (only with ``on_bad_sample="skip"``): why, by
    ``manifest:line``."""

    @property
    def num_skipped(self) -> int:
        return len(self.bad_lines)


def read_manifest(path: Path, *, on_bad_sample: OnBadSample = "error", check_audio_files: bool = True) -> Manifest:
    """Reads a JSONL or TSV manifest.

    A bad line (missing field, negative duration, missing or empty audio file)
    raises :class:`ManifestError` naming the file and line, or is skipped and
    counted when ``on_bad_sample`` is ``"skip"``. Checking the audio files up
    front (one ``stat`` each) turns what would be a crash hours into a run into
    an error at start-up.
    """
    if not path.is_file():
        raise ManifestError(f"{path}: the manifest file does not exist.")

    if path.suffix == ".jsonl":
        lines = _read_jsonl(path)
    elif path.suffix == ".tsv":
        lines = _read_tsv(path)
    else:
        raise ManifestError(f"{path}: unknown manifest format; expected a `.jsonl` or `.tsv` file.")

    records = []

    bad_lines = {}

    for line_nr, record_or_error in lines:
        if isinstance(record_or_error, ManifestRecord) and check_audio_files:
            record_or_error = _check_audio_file(record_or_error)

        if isinstance(record_or_error, str):
            message = f"{path}:{line_nr}: {record_or_error}"

            if on_bad_sample == "error":
                raise ManifestError(message)

            log.warning("Skipping bad manifest line. {}", message)

            bad_lines[f"{path}:{line_nr}"] = message
        else:
            records.append(record_or_error)

    if not records:
        raise ManifestError(f"{path}: the manifest has no usable utterance.")

    return Manifest(path=path, records=records, bad_lines=bad_lines)


def _check_audio_file(record: ManifestRecord) -> ManifestRecord | str:
    try:
        size = os.stat(record.audio_path).st_size
    except OSError:
        return f"the audio file {record.audio_path} does not exist or cannot be read."

    if size == 0:
        return f"the audio file {record.audio_path} is empty."

    return record


def _read_jsonl(path: Path) -> Iterator[tuple[int, ManifestRecord | str]]:
    base_dir = path.parent.resolve()

    with path.open(encoding="utf-8") as fp:
        for line_nr, line in enumerate(fp, start=1):
            if not line.strip():
                continue

            yield line_nr, _parse_jsonl_line(line, base_dir, f"{path}:{line_nr}")


def _parse_jsonl_line(line: str, base_dir: Path, source: str) -> ManifestRecord | str:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as ex:
        return f"the line is not valid JSON ({ex.msg})."

    if not isinstance(entry, dict):
        return "the line is not a JSON object."

    for name in ("audio_filepath", "duration", "text"):
        if name not in entry:
            return f"the `{name}` field is missing."

    audio_filepath = entry["audio_filepath"]
    if not isinstance(audio_filepath, str) or not audio_filepath:
        return "the `audio_filepath` field must be a non-empty string."

    text = entry["text"]
    if not isinstance(text, str):
        return "the `text` field must be a string."

    duration = _as_seconds(entry["duration"])
    if duration is None or duration <= 0.0:
        return f"the `duration` field must be a positive number of seconds, but is {entry['duration']!r}."

    offset = _as_seconds(entry.get("offset", 0.0))
    if offset is None or offset < 0.0:
        return f"the `offset` field must be a non-negative number of seconds, but is {entry.get('offset')!r}."

    audio_path = base_dir / audio_filepath  # an absolute path stays as it is

    utterance_id = entry.get("id")
    if utterance_id is None:
        utterance_id = f"{Path(audio_filepath).stem}@{offset:g}" if offset else Path(audio_filepath).stem

    fields = {k: v for k, v in entry.items() if k not in _JSONL_KNOWN_FIELDS}

    return ManifestRecord(
        id=str(utterance_id),
        audio_path=str(audio_path),
        offset=offset,
        duration=duration,
        text=text,
        source=source,
        fields=fields,
    )


def _as_seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None

    seconds = float(value)

    return seconds if math.isfinite(seconds) else None


def _read_tsv(path: Path) -> Iterator[tuple[int, ManifestRecord | str]]:
    """fairseq's layout: line 1 is the audio root, then ``path<TAB>n_samples``
    and, for a segment of a longer file, ``<TAB>start_sample``; transcripts are
    line-aligned in ``<split>.wrd`` (words) or ``<split>.ltr`` (letters, ``|``
    between words)."""
    with path.open(encoding="utf-8") as fp:
        lines = fp.read().splitlines()

    if not lines or not lines[0].strip():
        raise ManifestError(f"{path}:1: the first line must be the audio root directory.")

    audio_root = Path(lines[0].strip())
    if not audio_root.is_absolute():
        audio_root = path.parent.resolve() / audio_root

    transcripts = _read_tsv_transcripts(path, num_lines=len(lines) - 1)

    for line_nr, (line, text) in enumerate(zip(lines[1:], transcripts), start=2):
        if not line.strip():
            continue

        yield line_nr, _parse_tsv_line(line, text, audio_root, f"{path}:{line_nr}")


def _read_tsv_transcripts(path: Path, num_lines: int) -> list[str]:
    wrd_file, ltr_file = path.with_suffix(".wrd"), path.with_suffix(".ltr")

    if wrd_file.is_file():
        transcript_file, is_letters = wrd_file, False
    elif ltr_file.is_file():
        transcript_file, is_letters = ltr_file, True
    else:
        raise ManifestError(f"{path}: no transcripts beside the manifest; expected {wrd_file.name} or {ltr_file.name}.")

    transcripts = transcript_file.read_text(encoding="utf-8").splitlines()

    if len(transcripts) != num_lines:
        raise ManifestError(
            f"{transcript_file}: has {len(transcripts)} lines, but {path.name} lists {num_lines} audio files; they must be line-aligned."
        )

    if is_letters:
        transcripts = [t.replace(" ", "").replace("|", " ").strip() for t in transcripts]

    return transcripts


def _parse_tsv_line(line: str, text: str, audio_root: Path, source: str) -> ManifestRecord | str:
    columns = line.split("\t")

    if len(columns) < 2:
        return "expected `path<TAB>n_samples[<TAB>start_sample]`."

    has_start_sample = len(columns) > 2 and bool(columns[2])

    try:
        num_samples = int(columns[1])

        start_sample = int(columns[2]) if has_start_sample else 0
    except ValueError:
        return f"the sample counts must be integers, but are {columns[1:3]}."

    if num_samples <= 0:
        return f"the number of samples must be positive, but is {num_samples}."

    if start_sample < 0:
        return f"the start sample must be non-negative, but is {start_sample}."

    relative_path = columns[0]

    stem = Path(relative_path).stem

    return ManifestRecord(
        id=f"{stem}@{start_sample}" if start_sample else stem,
        audio_path=str(audio_root / relative_path),
        offset=start_sample / TSV_SAMPLE_RATE,
        duration=num_samples / TSV_SAMPLE_RATE,
        text=text,
        source=source,
        whole_file=not has_start_sample,
    )


def find_split_manifests(manifest_dir: Path) -> dict[str, Path]:
    """Returns the manifests of ``manifest_dir`` by split (file stem)."""
    if not manifest_dir.is_dir():
        raise ManifestError(f"{manifest_dir}: the manifest directory does not exist.")

    manifests: dict[str, Path] = {}

    for path in sorted(manifest_dir.iterdir()):
        if path.suffix not in MANIFEST_SUFFIXES:
            continue

        if path.stem in manifests:
            raise ManifestError(
                f"{manifest_dir}: split `{path.stem}` has two manifests, {manifests[path.stem].name} and {path.name}."
            )

        manifests[path.stem] = path

    return manifests
