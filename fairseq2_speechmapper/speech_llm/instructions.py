"""Instructions and responses for a batch, with each wording's chat prompt
built once."""

from __future__ import annotations

import random
from typing import final

from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.speech_llm.chat import SpeechPrompt
from fairseq2_speechmapper.speech_llm.model import SpeechLLM
from fairseq2_speechmapper.speech_llm.tasks import SpeechTask, SpeechTaskSection, TaskExample, build_task_example


@final
class InstructionBuilder:
    """Turns a batch into instructions and responses for one task."""

    def __init__(self, model: SpeechLLM, section: SpeechTaskSection) -> None:
        self._template = model.chat_template
        self._section = section
        self._prompts: dict[str, SpeechPrompt] = {}

    def examples(self, batch: SpeechBatch, task: SpeechTask, rng: random.Random | None) -> list[TaskExample]:
        return [
            build_task_example(self._section, task, text, fields, source=source, rng=rng)
            for text, fields, source in zip(batch.texts, batch.fields, batch.sources)
        ]

    def speech_prompt(self, instruction: str) -> SpeechPrompt:
        # A few wordings serve the whole run.
        prompt = self._prompts.get(instruction)
        if prompt is None:
            prompt = self._prompts[instruction] = self._template.speech_prompt(instruction)

        return prompt
