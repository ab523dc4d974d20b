"""Spoken-SQuAD manifests: one line per question, its audio the spoken
paragraph.

The official layout::

    ROOT/spoken_train-v1.1.json    SQuAD format; each paragraph's `context` is
    ROOT/spoken_test-v1.1.json     the CMU Sphinx transcript of its audio
    ROOT/train_wav/<article>_<paragraph>_<sentence>.wav   one file per sentence
    ROOT/dev_wav/<article>_<paragraph>_<sentence>.wav     (the test split's)

with 0-based indices in the order of the JSON file. A manifest line holds one
audio file (or a segment of one), so the sentences of each paragraph are
concatenated once into ``OUT/audio/<split>/<article>_<paragraph>.wav``
(16-bit PCM) and every question of the paragraph points at it; an existing
file of the right length is kept, so a second run only checks.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import numpy as np
import soundfile

from .manifest import (
    SKIPPED_MISSING_AUDIO,
    PrepareError,
    PrepareOptions,
    PrepareResult,
    Utterance,
    absolute_path,
    existing_dir,
    write_split,
)

SPOKEN_SQUAD_SPLITS: Final = ("train", "test")

# The test split is SQuAD's dev set, hence its audio directory's name.
_SPLIT_FILES: Final = {
    "train": ("spoken_train-v1.1.json", "train_wav"),
    "test": ("spoken_test-v1.1.json", "dev_wav"),
}

SPOKEN_SQUAD_AUDIO_DIR: Final = "audio"
"""The directory under OUT with the concatenated paragraphs."""

_SENTENCE_WAV: Final = re.compile(r"(\d+)_(\d+)_(\d+)\.wav")


def prepare_spoken_squad(
    root: Path, out_dir: Path, options: PrepareOptions, *, splits: Sequence[str] = SPOKEN_SQUAD_SPLITS
) -> PrepareResult:
    """Writes ``out_dir/<split>.jsonl`` (``text``: the paragraph's ASR
    transcript, ``question``, ``answers``: a list, ``lang``) and the
    paragraphs' audio in ``out_dir/audio/<split>/``.

    :raises PrepareError: if a file is missing or malformed, or the sentences
        of a paragraph differ in sample rate or channels.
    """
    root, out_dir = existing_dir(root, "Spoken-SQuAD root"), absolute_path(out_dir)

    prepared = []

    for split in splits:
        if split not in _SPLIT_FILES:
            raise PrepareError(f"Spoken-SQuAD has the splits {', '.join(_SPLIT_FILES)}, not `{split}`.")

        json_name, wav_dir_name = _SPLIT_FILES[split]

        wav_dir = existing_dir(root / wav_dir_name, f"directory of the {split} audio")

        paragraphs = read_spoken_squad_json(root / json_name)

        audio_dir = out_dir / SPOKEN_SQUAD_AUDIO_DIR / split

        utterances, skipped = _write_paragraph_audio(paragraphs, wav_dir, audio_dir, options)

        prepared.append(write_split(split, utterances, out_dir, options, skipped=skipped))

    return PrepareResult(splits=prepared)


@final
@dataclass(kw_only=True)
class SpokenSquadParagraph:
    article_index: int

    paragraph_index: int

    context: str
    """The ASR transcript of the paragraph."""

    questions: list[tuple[str, str, list[str]]]
    """The id, question and answer texts of each question."""

    source: str
    """Where the JSON file has the paragraph, for error messages."""


def read_spoken_squad_json(json_file: Path) -> list[SpokenSquadParagraph]:
    """Reads the paragraphs and questions of a SQuAD v1.1-format file."""
    if not json_file.is_file():
        raise PrepareError(f"{json_file}: the file does not exist.")

    try:
        document = json.loads(json_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as ex:
        raise PrepareError(f"{json_file}:{ex.lineno}: not valid JSON ({ex.msg}).") from None

    articles = document.get("data") if isinstance(document, dict) else None

    if not isinstance(articles, list):
        raise PrepareError(f"{json_file}: not a SQuAD file; expected an object with a `data` list of articles.")

    paragraphs = []

    for article_index, article in enumerate(articles):
        for paragraph_index, paragraph in enumerate(
            _list_field(article, "paragraphs", f"{json_file}: data[{article_index}]")
        ):
            source = f"{json_file}: data[{article_index}].paragraphs[{paragraph_index}]"

            context = _str_field(paragraph, "context", source)

            questions = []

            for qa_index, qa in enumerate(_list_field(paragraph, "qas", source)):
                qa_source = f"{source}.qas[{qa_index}]"

                answers = [_str_field(a, "text", f"{qa_source}.answers") for a in _list_field(qa, "answers", qa_source)]

                questions.append((_str_field(qa, "id", qa_source), _str_field(qa, "question", qa_source), answers))

            paragraphs.append(
                SpokenSquadParagraph(
                    article_index=article_index,
                    paragraph_index=paragraph_index,
                    context=context,
                    questions=questions,
                    source=source,
                )
            )

    return paragraphs


def _list_field(entry: object, name: str, source: str) -> list[object]:
    value = entry.get(name) if isinstance(entry, dict) else None

    if not isinstance(value, list):
        raise PrepareError(f"{source}: the `{name}` field must be a list.")

    return value


def _str_field(entry: object, name: str, source: str) -> str:
    value = entry.get(name) if isinstance(entry, dict) else None

    if not isinstance(value, str):
        raise PrepareError(f"{source}: the `{name}` field must be a string.")

    return value


def _index_sentence_wavs(wav_dir: Path) -> dict[tuple[int, int], dict[int, Path]]:
    """The sentence files of each (article, paragraph), by sentence index;
    one directory listing instead of a ``stat`` per expected file."""
    index: dict[tuple[int, int], dict[int, Path]] = {}

    with os.scandir(wav_dir) as entries:
        for entry in entries:
            match = _SENTENCE_WAV.fullmatch(entry.name)

            if match is not None:
                article, paragraph, sentence = map(int, match.groups())

                index.setdefault((article, paragraph), {})[sentence] = wav_dir / entry.name

    return index


def _write_paragraph_audio(
    paragraphs: list[SpokenSquadParagraph], wav_dir: Path, audio_dir: Path, options: PrepareOptions
) -> tuple[list[Utterance], Counter[str]]:
    sentence_wavs = _index_sentence_wavs(wav_dir)

    audio_dir.mkdir(parents=True, exist_ok=True)

    def concatenate(paragraph: SpokenSquadParagraph) -> Path | None:
        key = (paragraph.article_index, paragraph.paragraph_index)

        sentences = sentence_wavs.get(key, {})

        # Sentences 0..n-1 without a gap; the first absent one is missing.
        num_sentences = next(i for i in range(len(sentences) + 1) if i not in sentences)

        if num_sentences == 0 or num_sentences != len(sentences):
            if options.skip_missing:
                return None

            missing = wav_dir / f"{key[0]}_{key[1]}_{num_sentences}.wav"

            raise PrepareError(
                f"{missing}: the audio file is missing (a sentence of {paragraph.source}); "
                "--skip-missing skips the paragraph's questions."
            )

        return _concatenate_wavs([sentences[i] for i in range(num_sentences)], audio_dir / f"{key[0]}_{key[1]}.wav")

    # libsndfile reads and writes without the GIL.
    with ThreadPoolExecutor(max_workers=max(1, options.num_threads)) as executor:
        paragraph_wavs = list(executor.map(concatenate, paragraphs))

    utterances = []

    skipped: Counter[str] = Counter()

    for paragraph, paragraph_wav in zip(paragraphs, paragraph_wavs):
        if paragraph_wav is None:
            skipped[SKIPPED_MISSING_AUDIO] += len(paragraph.questions)

            continue

        for question_id, question, answers in paragraph.questions:
            utterances.append(
                Utterance(
                    id=question_id,
                    audio_path=paragraph_wav,
                    text=paragraph.context,
                    source=paragraph.source,
                    fields={"lang": "en", "question": question, "answers": answers},
                )
            )

    return utterances, skipped


def _concatenate_wavs(sentence_files: list[Path], paragraph_file: Path) -> Path:
    """Writes the sentences one after the other as ``paragraph_file``, unless
    it is already there with their length and sample rate."""
    sample_rate, channels, num_frames = None, None, 0

    for sentence_file in sentence_files:
        try:
            info = soundfile.info(str(sentence_file))
        except (soundfile.LibsndfileError, RuntimeError) as ex:
            raise PrepareError(f"{sentence_file}: the audio header cannot be read: {ex}") from None

        if sample_rate is None:
            sample_rate, channels = info.samplerate, info.channels
        elif (info.samplerate, info.channels) != (sample_rate, channels):
            raise PrepareError(
                f"{sentence_file}: {info.samplerate} Hz with {info.channels} channel(s), but the paragraph's first "
                f"sentence {sentence_files[0].name} has {sample_rate} Hz with {channels}; they cannot be concatenated."
            )

        num_frames += info.frames

    if paragraph_file.is_file():
        try:
            existing = soundfile.info(str(paragraph_file))
        except (soundfile.LibsndfileError, RuntimeError):
            pass
        else:
            if (existing.frames, existing.samplerate, existing.channels) == (num_frames, sample_rate, channels):
                return paragraph_file

    audio = np.concatenate([soundfile.read(str(f), dtype="int16", always_2d=True)[0] for f in sentence_files])

    # Renamed into place: a killed run leaves no short file that a second run keeps.
    tmp_file = paragraph_file.with_name(paragraph_file.name + ".tmp")

    soundfile.write(str(tmp_file), audio, sample_rate, subtype="PCM_16", format="WAV")

    tmp_file.replace(paragraph_file)

    return paragraph_file
