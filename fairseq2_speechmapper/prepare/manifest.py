"""What the corpus writers share: utterances found in a corpus' metadata, the
audio headers read in parallel, and the atomic writing of one manifest."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final

import soundfile

from fairseq2_speechmapper.errors import SpeechMapperError
from fairseq2_speechmapper.files import write_text_atomically

MANIFEST_SUFFIX: Final = ".jsonl"

# Reading a header is mostly waiting on the disk (or a network file system),
# and libsndfile runs without the GIL: many more threads than cores pay off.
DEFAULT_NUM_THREADS: Final = min(32, 4 * (os.cpu_count() or 1))

# Paths per task of the thread pool: 280K single-file futures would cost more
# than the headers they read.
_PATHS_PER_TASK: Final = 256

# Extensions whose libsndfile format name differs from the extension itself.
_LIBSNDFILE_FORMAT_OF_EXTENSION: Final = {"aif": "AIFF", "oga": "OGG", "opus": "OGG"}

SKIPPED_MISSING_AUDIO: Final = "missing audio"
SKIPPED_EMPTY_AUDIO: Final = "empty audio"
SKIPPED_SEGMENT_PAST_AUDIO: Final = "segment past the end of its audio"


class PrepareError(SpeechMapperError):
    """A corpus file is missing or malformed; the message is one line that
    names the file (and the line)."""


@final
@dataclass(kw_only=True)
class PrepareOptions:
    skip_missing: bool = False
    """Skip (and count) utterances whose audio file is missing instead of
    failing."""

    num_threads: int = DEFAULT_NUM_THREADS
    """The threads that read audio headers."""


@final
@dataclass(kw_only=True)
class Utterance:
    """An utterance as a corpus' metadata lists it, before its audio is read."""

    id: str

    audio_path: Path
    """The absolute path of the audio file."""

    text: str
    """The transcript, as the corpus writes it."""

    source: str
    """Where the corpus lists the utterance (``file:line``), for error messages."""

    segment: tuple[float, float] | None = None
    """The start and end (seconds) of a segment of a longer audio file;
    ``None`` for the whole file."""

    fields: dict[str, object] = field(default_factory=dict)
    """Task fields kept for later stages: ``lang``, ``translation``,
    ``tgt_lang``, ``speaker``, ``question``, ``answers`` (a list), ..."""


@final
@dataclass(frozen=True, kw_only=True)
class AudioFileInfo:
    exists: bool

    duration: float | None
    """The duration in seconds from the header; ``None`` when the file is
    missing or its header was not read."""


@final
@dataclass(kw_only=True)
class PreparedSplit:
    """The summary of one written manifest."""

    name: str

    manifest_file: Path

    num_utterances: int

    seconds: float

    skipped: Counter[str] = field(default_factory=Counter)
    """The skipped utterances by reason."""

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


@final
@dataclass(kw_only=True)
class PrepareResult:
    splits: list[PreparedSplit]

    notes: list[str] = field(default_factory=list)
    """What the user must know or do before training on the manifests."""


def libsndfile_reads(extension: str) -> bool:
    """Tells whether libsndfile (through soundfile) decodes audio files with
    ``extension`` (without the dot); it reads no AAC (``m4a``)."""
    extension = extension.lower().lstrip(".")

    format_name = _LIBSNDFILE_FORMAT_OF_EXTENSION.get(extension, extension.upper())

    return format_name in soundfile.available_formats()


def probe_audio_files(
    paths: Iterable[Path], *, read_headers: bool = True, num_threads: int = DEFAULT_NUM_THREADS
) -> dict[Path, AudioFileInfo]:
    """Checks that each of ``paths`` exists and, with ``read_headers``, reads
    its duration from the header, in a thread pool.

    :raises PrepareError: if an existing file's header cannot be read.
    """
    unique_paths = list(dict.fromkeys(paths))

    tasks = [unique_paths[i : i + _PATHS_PER_TASK] for i in range(0, len(unique_paths), _PATHS_PER_TASK)]

    def probe_task(task: list[Path]) -> list[AudioFileInfo]:
        return [_probe_audio_file(path, read_headers) for path in task]

    infos: dict[Path, AudioFileInfo] = {}

    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as executor:
        for task, task_infos in zip(tasks, executor.map(probe_task, tasks)):
            infos.update(zip(task, task_infos))

    return infos


def _probe_audio_file(path: Path, read_header: bool) -> AudioFileInfo:
    if not path.is_file():
        return AudioFileInfo(exists=False, duration=None)

    if not read_header:
        return AudioFileInfo(exists=True, duration=None)

    try:
        # Not `soundfile.info()`: it also reads the string metadata.
        with soundfile.SoundFile(path) as audio:
            # MP3: libsndfile takes the length from the Xing/Info header that
            # LAME and ffmpeg write, else estimates it; either way it is what
            # libsndfile (fairseq2's decoder too) will decode.
            duration = audio.frames / audio.samplerate
    except (soundfile.LibsndfileError, RuntimeError) as ex:
        raise PrepareError(f"{path}: the audio header cannot be read: {ex}") from None

    return AudioFileInfo(exists=True, duration=duration)


def write_split(
    name: str,
    utterances: Sequence[Utterance],
    out_dir: Path,
    options: PrepareOptions,
    *,
    read_headers: bool = True,
    skipped: Counter[str] | None = None,
) -> PreparedSplit:
    """Reads the durations of ``utterances`` and writes them as
    ``out_dir/<name>.jsonl``.

    Without ``read_headers`` (audio libsndfile cannot read) only segments get
    a duration, from their start and end.

    :param skipped: utterances the corpus reader already skipped, by reason.

    :raises PrepareError: if an audio file is missing (unless
        ``options.skip_missing``) or cannot be read.
    """
    infos = probe_audio_files(
        (u.audio_path for u in utterances), read_headers=read_headers, num_threads=options.num_threads
    )

    skipped = Counter(skipped)

    lines = []

    seconds = 0.0

    for utterance in utterances:
        info = infos[utterance.audio_path]

        if not info.exists:
            if not options.skip_missing:
                raise PrepareError(
                    f"{utterance.audio_path}: the audio file is missing (listed in {utterance.source}); "
                    "--skip-missing skips such utterances."
                )

            skipped[SKIPPED_MISSING_AUDIO] += 1

            continue

        offset, duration, reason = _segment_of(utterance, info.duration)

        if reason is not None:
            skipped[reason] += 1

            continue

        lines.append(_manifest_line(utterance, offset, duration))

        seconds += duration

    manifest_file = out_dir / f"{name}{MANIFEST_SUFFIX}"

    write_manifest_lines(manifest_file, lines)

    return PreparedSplit(
        name=name, manifest_file=manifest_file, num_utterances=len(lines), seconds=seconds, skipped=skipped
    )


def _segment_of(utterance: Utterance, file_duration: float | None) -> tuple[float | None, float, str | None]:
    """Returns the offset (``None`` for a whole file), the duration and, for
    an utterance without audio, the reason to skip it."""
    if utterance.segment is None:
        if file_duration is None:
            raise ValueError(f"{utterance.source}: a whole-file utterance needs the audio header.")

        if file_duration <= 0.0:
            return None, 0.0, SKIPPED_EMPTY_AUDIO

        return None, file_duration, None

    start, end = utterance.segment

    # Timestamps of converted audio may overshoot the file by a few milliseconds.
    if file_duration is not None:
        end = min(end, file_duration)

    # Rounded to microseconds: `12.35 - 10.2` is 2.1499999999999986.
    duration = round(end - start, 6)

    if duration <= 0.0:
        return start, 0.0, SKIPPED_SEGMENT_PAST_AUDIO

    return start, duration, None


def _manifest_line(utterance: Utterance, offset: float | None, duration: float) -> str:
    entry: dict[str, object] = {"audio_filepath": str(utterance.audio_path), "duration": duration}

    if offset is not None:
        entry["offset"] = offset

    entry["text"] = utterance.text
    entry["id"] = utterance.id

    entry.update(utterance.fields)

    return json.dumps(entry, ensure_ascii=False)


def write_manifest_lines(manifest_file: Path, lines: Iterable[str]) -> None:
    """Writes ``lines`` as ``manifest_file``; atomically, so that a killed run
    never leaves a manifest that looks complete."""
    write_text_atomically(manifest_file, (line + "\n" for line in lines))


def concatenate_splits(name: str, splits: Sequence[PreparedSplit], out_dir: Path) -> PreparedSplit:
    """Writes the union of already written ``splits`` as ``out_dir/<name>.jsonl``."""
    manifest_file = out_dir / f"{name}{MANIFEST_SUFFIX}"

    def lines() -> Iterable[str]:
        for split in splits:
            with split.manifest_file.open(encoding="utf-8") as fp:
                for line in fp:
                    yield line.rstrip("\n")

    write_manifest_lines(manifest_file, lines())

    return PreparedSplit(
        name=name,
        manifest_file=manifest_file,
        num_utterances=sum(s.num_utterances for s in splits),
        seconds=sum(s.seconds for s in splits),
        skipped=sum((s.skipped for s in splits), Counter()),
    )


def absolute_path(path: Path) -> Path:
    """Returns ``path`` absolute and normalised, with symbolic links kept (a
    corpus linked into place stays where the link says)."""
    return Path(os.path.abspath(path))


def existing_dir(path: Path, what: str) -> Path:
    """Returns ``path`` absolute (as :func:`absolute_path` does).

    :raises PrepareError: if ``path`` is not a directory, naming ``what`` it is.
    """
    if not path.is_dir():
        raise PrepareError(f"{path}: the {what} does not exist or is not a directory.")

    return absolute_path(path)
