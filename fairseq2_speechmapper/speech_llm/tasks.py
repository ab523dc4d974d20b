"""The tasks a speech LLM is tuned and evaluated on, as instructions and
expected responses built from manifest lines."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, final

from fairseq2.utils.validation import ValidationResult

from fairseq2_speechmapper.errors import SpeechMapperError

SpeechTask = Literal["asr", "st", "sqa"]

SPEECH_TASKS: Final = ("asr", "st", "sqa")

DEFAULT_ASR_PROMPTS: Final = (
    "Transcribe the audio.",
    "Write down exactly what the speaker says.",
    "What is said in this recording? Answer with the transcript only.",
    "Convert this speech into text.",
    "Repeat what you hear, word for word.",
)

DEFAULT_ST_PROMPTS: Final = (
    "Translate the audio into {language}.",
    "Translate what the speaker says into {language}. Answer with the translation only.",
    "Listen to the recording and write its {language} translation.",
)

DEFAULT_SQA_PROMPTS: Final = (
    "Listen to the audio and answer the question: {question}",
    "{question} Answer using the recording.",
    "Based on what is said in the audio, answer briefly: {question}",
)

LANGUAGE_NAMES: Final = {
    "ar": "Arabic", "ca": "Catalan", "cs": "Czech", "cy": "Welsh", "de": "German", "en": "English",
    "es": "Spanish", "et": "Estonian", "fa": "Persian", "fr": "French", "id": "Indonesian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lv": "Latvian", "mn": "Mongolian",
    "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian",
    "sl": "Slovenian", "sv": "Swedish", "ta": "Tamil", "tr": "Turkish", "uk": "Ukrainian",
    "zh": "Chinese",
}  # fmt: skip


class TaskDataError(SpeechMapperError):
    """A manifest line lacks what its task needs."""


@dataclass(kw_only=True)
class SpeechTaskSection:
    """What the speech LLM is asked to do with each utterance."""

    task: SpeechTask = "asr"
    """``asr`` (the transcript), ``st`` (the manifest's ``translation`` into
    ``tgt_lang``) or ``sqa`` (the answer to the manifest's ``question``)."""

    asr_prompts: list[str] = field(default_factory=lambda: list(DEFAULT_ASR_PROMPTS))
    """ASR instructions; training draws one per utterance, evaluation uses the first."""

    st_prompts: list[str] = field(default_factory=lambda: list(DEFAULT_ST_PROMPTS))
    """Translation instructions; ``{language}`` is the target language's English name."""

    sqa_prompts: list[str] = field(default_factory=lambda: list(DEFAULT_SQA_PROMPTS))
    """Spoken-QA instructions; ``{question}`` is the manifest's question."""

    target_language: str | None = None
    """ST only: the target language code for manifest lines without ``tgt_lang``."""

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        for name, prompts, placeholder in (
            ("asr_prompts", self.asr_prompts, None),
            ("st_prompts", self.st_prompts, "{language}"),
            ("sqa_prompts", self.sqa_prompts, "{question}"),
        ):
            if not prompts:
                result.add_error(f"`{name}` must hold at least one instruction.")

            if placeholder is not None and any(placeholder not in prompt for prompt in prompts):
                result.add_error(f"Every instruction of `{name}` must contain `{placeholder}`.")

        return result


@final
@dataclass(kw_only=True)
class TaskExample:
    instruction: str
    response: str
    """The expected answer: transcript, translation or one reference answer."""

    references: list[str]
    """All acceptable answers (several for spoken QA)."""

    target_language: str | None = None


def build_task_example(
    section: SpeechTaskSection,
    task: SpeechTask,
    transcript: str,
    fields: Mapping[str, object],
    *,
    source: str,
    rng: random.Random | None = None,
) -> TaskExample:
    """Builds the instruction and expected response of one manifest line
    (``source``: its ``manifest:line``); ``rng`` draws the instruction wording,
    else the first wording is used."""

    def pick(prompts: Sequence[str]) -> str:
        return prompts[0] if rng is None else rng.choice(prompts)

    if task == "asr":
        return TaskExample(instruction=pick(section.asr_prompts), response=transcript, references=[transcript])

    if task == "st":
        translation = _text_field(fields, "translation", source)

        language = fields.get("tgt_lang") or section.target_language
        if not isinstance(language, str):
            raise TaskDataError(f"{source}: no `tgt_lang` field, and `task.target_language` is not set.")

        language_name = LANGUAGE_NAMES.get(language.split("-")[0].lower(), language)

        return TaskExample(
            instruction=pick(section.st_prompts).format(language=language_name),
            response=translation,
            references=[translation],
            target_language=language,
        )

    question = _text_field(fields, "question", source)

    answers = fields.get("answers")
    if isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers):
        references = [str(a) for a in answers]
    else:
        references = [_text_field(fields, "answer", source)]

    return TaskExample(
        instruction=pick(section.sqa_prompts).format(question=question), response=references[0], references=references
    )


def _text_field(fields: Mapping[str, object], name: str, source: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value.strip():
        raise TaskDataError(f"{source}: the `{name}` field is missing or empty.")

    return value.strip()
