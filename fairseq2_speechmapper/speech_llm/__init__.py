"""The speech LLM of stage 2: a trained mapper attached to its frozen LLM."""

from __future__ import annotations

from fairseq2_speechmapper.speech_llm.chat import AUDIO_PLACEHOLDER as AUDIO_PLACEHOLDER
from fairseq2_speechmapper.speech_llm.chat import ChatTemplate as ChatTemplate
from fairseq2_speechmapper.speech_llm.chat import ChatTemplateError as ChatTemplateError
from fairseq2_speechmapper.speech_llm.chat import SpeechPrompt as SpeechPrompt
from fairseq2_speechmapper.speech_llm.instructions import InstructionBuilder as InstructionBuilder
from fairseq2_speechmapper.speech_llm.loader import SpeechLLMSection as SpeechLLMSection
from fairseq2_speechmapper.speech_llm.loader import SpeechLLMSetupError as SpeechLLMSetupError
from fairseq2_speechmapper.speech_llm.loader import load_speech_llm as load_speech_llm
from fairseq2_speechmapper.speech_llm.model import MappedSpeech as MappedSpeech
from fairseq2_speechmapper.speech_llm.model import ResponseLogits as ResponseLogits
from fairseq2_speechmapper.speech_llm.model import SpeechLLM as SpeechLLM
from fairseq2_speechmapper.speech_llm.tasks import SPEECH_TASKS as SPEECH_TASKS
from fairseq2_speechmapper.speech_llm.tasks import SpeechTask as SpeechTask
from fairseq2_speechmapper.speech_llm.tasks import SpeechTaskSection as SpeechTaskSection
from fairseq2_speechmapper.speech_llm.tasks import TaskDataError as TaskDataError
from fairseq2_speechmapper.speech_llm.tasks import TaskExample as TaskExample
from fairseq2_speechmapper.speech_llm.tasks import build_task_example as build_task_example
