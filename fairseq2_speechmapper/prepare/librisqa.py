"""LibriSQA manifests: questions about LibriSpeech utterances, the audio from
a LibriSpeech root.

LibriSQA (Zhao et al., 2023) ships per part and split a JSON list (or JSONL)
of records::

    LIBRISQA_DIR/LibriSQA-PartI/LibriSQA-PartI-<split>.json    (or flat in LIBRISQA_DIR)
    {"speech_path": "test-clean/1089/134686/1089-134686-0000.wav", "text": "...",
     "question": "...", "answer": "..."}

Part I has open answers; Part II multiple-choice questions whose choices are
a ``choices`` (or ``options``) list or letter-keyed object, or else are
written in the question (``(A) ... (B) ...`` or one ``A. ...`` per line).
The audio is named by ``speech_path`` (``audio_path``, ``path``; relative to
the LibriSpeech directory, a ``.wav`` name found as LibriSpeech's ``.flac``)
or by the LibriSpeech utterance ``id``; a record without ``text`` gets the
LibriSpeech transcript.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final, final

from .librispeech import LIBRISPEECH_SUBSETS, find_librispeech_dir
from .manifest import PrepareError, PrepareOptions, PrepareResult, Utterance, existing_dir, write_split

LIBRISQA_PARTS: Final = ("1", "2")

LIBRISQA_SPLITS: Final = ("train", "test")

_PART_NAMES: Final = {"1": "I", "2": "II"}

_AUDIO_FIELDS: Final = ("speech_path", "audio_path", "path")

_LIBRISPEECH_ID: Final = re.compile(r"(\d+)-(\d+)-\d+")

# Choices written in the question: "(A) ... (B) ..." anywhere, or "A. ..." /
# "A) ..." / "A: ..." at line starts.
_PARENTHESISED_CHOICE: Final = re.compile(r"\(([A-H])\)\s*")
_LINE_CHOICE: Final = re.compile(r"^[ \t]*([A-H])[.):][ \t]+", re.MULTILINE)


def prepare_librisqa(
    librisqa_dir: Path,
    librispeech_root: Path,
    out_dir: Path,
    options: PrepareOptions,
    *,
    parts: Sequence[str] = LIBRISQA_PARTS,
    splits: Sequence[str] = LIBRISQA_SPLITS,
) -> PrepareResult:
    """Writes ``out_dir/part<N>/<split>.jsonl`` for each of ``parts`` (``1``,
    ``2``): ``text`` (the transcript), ``question``, ``answers`` (a list),
    ``part`` (``I``/``II``), ``choices`` (Part II), ``lang``, ``speaker``.

    :raises PrepareError: if a file is missing, or a record malformed (naming
        the file and line or record).
    """
    librisqa_dir = existing_dir(librisqa_dir, "LibriSQA directory")

    audio_finder = _LibriSpeechAudio(find_librispeech_dir(librispeech_root))

    prepared = []

    for part in parts:
        if part not in _PART_NAMES:
            raise PrepareError(f"LibriSQA has the parts {', '.join(LIBRISQA_PARTS)}, not `{part}`.")

        for split in splits:
            records_file = find_librisqa_file(librisqa_dir, part, split)

            utterances = [
                librisqa_utterance(record, source, part=part, index=index, audio_finder=audio_finder)
                for index, (source, record) in enumerate(read_records(records_file))
            ]

            prepared_split = write_split(split, utterances, out_dir / f"part{part}", options)

            prepared.append(replace(prepared_split, name=f"part{part}/{split}"))

    return PrepareResult(splits=prepared)


def find_librisqa_file(librisqa_dir: Path, part: str, split: str) -> Path:
    """The records of a part and split, in the release's folder of the part or
    flat in ``librisqa_dir``, as ``.json`` or ``.jsonl``."""
    stem = f"LibriSQA-Part{_PART_NAMES[part]}"

    candidates = [
        directory / f"{stem}-{split}{suffix}"
        for directory in (librisqa_dir / stem, librisqa_dir)
        for suffix in (".json", ".jsonl")
    ]

    for candidate in candidates:
        if candidate.is_file():
            return candidate

    raise PrepareError(
        f"{librisqa_dir}: no LibriSQA Part {_PART_NAMES[part]} {split} file in it "
        f"({stem}/{stem}-{split}.json, or .jsonl, or either without the {stem}/ folder)."
    )


def read_records(records_file: Path) -> Iterator[tuple[str, object]]:
    """Yields where each record is (``file:line`` in JSONL, ``file: record N``
    in a JSON list) and the record."""
    text = records_file.read_text(encoding="utf-8")

    if records_file.suffix == ".jsonl":
        for line_nr, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue

            source = f"{records_file}:{line_nr}"

            try:
                yield source, json.loads(line)
            except json.JSONDecodeError as ex:
                raise PrepareError(f"{source}: the line is not valid JSON ({ex.msg}).") from None

        return

    try:
        document = json.loads(text)
    except json.JSONDecodeError as ex:
        raise PrepareError(f"{records_file}:{ex.lineno}: not valid JSON ({ex.msg}).") from None

    if not isinstance(document, list):
        raise PrepareError(f"{records_file}: expected a JSON list of records.")

    for index, record in enumerate(document):
        yield f"{records_file}: record {index}", record


def librisqa_utterance(
    record: object, source: str, *, part: str, index: int, audio_finder: _LibriSpeechAudio
) -> Utterance:
    """The utterance of a LibriSQA record; ``index`` (the record's position in
    its file) makes the id unique, since an utterance has several questions."""
    if not isinstance(record, dict):
        raise PrepareError(f"{source}: the record is not a JSON object.")

    audio_path = audio_finder.find(record, source)

    question = _required_str(record, "question", source)

    if isinstance(record.get("answers"), list) and record["answers"]:
        answers = [str(answer) for answer in record["answers"]]
    else:
        answers = [_required_str(record, "answer", source)]

    text = record.get("text")

    if not isinstance(text, str) or not text.strip():
        # Without audio the utterance is reported (or skipped) as such when
        # the split is written; its transcript does not matter.
        text = audio_finder.transcript(audio_path, source) if audio_path.is_file() else ""

    fields: dict[str, object] = {
        "lang": "en",
        "speaker": audio_path.parent.parent.name,
        "question": question,
        "answers": answers,
        "part": _PART_NAMES[part],
    }

    if part == "2":
        fields["choices"] = _choices(record, question, source)

    return Utterance(
        id=f"{audio_path.stem}_{index}", audio_path=audio_path, text=text.strip(), source=source, fields=fields
    )


def _required_str(record: dict[str, object], name: str, source: str) -> str:
    value = record.get(name)

    if not isinstance(value, str) or not value.strip():
        raise PrepareError(f"{source}: the `{name}` field is missing or not a non-empty string.")

    return value.strip()


def _choices(record: dict[str, object], question: str, source: str) -> list[str]:
    for name in ("choices", "options"):
        value = record.get(name)

        if isinstance(value, list) and value:
            return [str(choice).strip() for choice in value]

        if isinstance(value, dict) and value:
            return [str(value[letter]).strip() for letter in sorted(value)]

    for pattern in (_PARENTHESISED_CHOICE, _LINE_CHOICE):
        choices = _choices_in_text(question, pattern)

        if choices:
            return choices

    raise PrepareError(
        f"{source}: a Part II record needs its choices: a `choices` list, or `(A) ... (B) ...` in the question."
    )


def _choices_in_text(text: str, pattern: re.Pattern[str]) -> list[str]:
    """The choices of ``text`` if its markers run A, B, ... (at least two)."""
    markers = list(pattern.finditer(text))

    letters = [m.group(1) for m in markers]

    if len(markers) < 2 or letters != [chr(ord("A") + i) for i in range(len(markers))]:
        return []

    ends = [m.start() for m in markers[1:]] + [len(text)]

    return [text[m.end() : end].strip() for m, end in zip(markers, ends)]


@final
class _LibriSpeechAudio:
    """Finds the audio file and transcript of a record in LibriSpeech."""

    def __init__(self, corpus_dir: Path) -> None:
        self._corpus_dir = corpus_dir

        # The transcripts of the chapters read so far, by utterance id.
        self._transcripts: dict[Path, dict[str, str]] = {}

    def find(self, record: dict[str, object], source: str) -> Path:
        for name in _AUDIO_FIELDS:
            value = record.get(name)

            if isinstance(value, str) and value.strip():
                return self._find_path(value.strip())

        utterance_id = record.get("id")

        if isinstance(utterance_id, str) and _LIBRISPEECH_ID.fullmatch(utterance_id):
            return self._find_id(utterance_id)

        raise PrepareError(
            f"{source}: the record names no audio; expected `speech_path` (or `audio_path`, `path`) "
            "or a LibriSpeech utterance `id`."
        )

    def _find_path(self, speech_path: str) -> Path:
        relative = Path(speech_path.removeprefix("LibriSpeech/"))

        path = self._corpus_dir / relative

        # LibriSQA names some utterances `.wav`; LibriSpeech ships `.flac`.
        if not path.is_file() and path.with_suffix(".flac").is_file():
            return path.with_suffix(".flac")

        return path

    def _find_id(self, utterance_id: str) -> Path:
        speaker, chapter = _LIBRISPEECH_ID.fullmatch(utterance_id).groups()  # type: ignore[union-attr]

        candidates = [
            self._corpus_dir / subset / speaker / chapter / f"{utterance_id}.flac" for subset in LIBRISPEECH_SUBSETS
        ]

        # A missing file is reported, naming the record, when the split is written.
        return next((path for path in candidates if path.is_file()), candidates[0])

    def transcript(self, audio_path: Path, source: str) -> str:
        chapter_dir = audio_path.parent

        trans_file = chapter_dir / f"{chapter_dir.parent.name}-{chapter_dir.name}.trans.txt"

        transcripts = self._transcripts.get(trans_file)

        if transcripts is None:
            transcripts = {}

            if trans_file.is_file():
                for line in trans_file.read_text(encoding="utf-8").splitlines():
                    utterance_id, _, text = line.strip().partition(" ")

                    transcripts[utterance_id] = text.strip()

            self._transcripts[trans_file] = transcripts

        text = transcripts.get(audio_path.stem)  # type: ignore[assignment]

        if not text:
            raise PrepareError(
                f"{source}: the record has no `text` and {trans_file} has no transcript of {audio_path.stem}."
            )

        return text
