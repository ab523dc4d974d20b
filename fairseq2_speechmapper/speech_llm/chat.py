"""The LLM's own chat template, with a hole where the speech goes.

The template is rendered as text with sentinels in place of the audio and the
response, then the text on either side is tokenised separately: the mapper's
output vectors are spliced between the two halves as they are, never through
the tokenizer.
"""

from __future__ import annotations

from typing import Any, Final, final

import torch
from jinja2.sandbox import ImmutableSandboxedEnvironment
from torch import Tensor

from fairseq2.data.tokenizers import Tokenizer

from fairseq2_speechmapper.errors import SpeechMapperError

AUDIO_PLACEHOLDER: Final = "<audio>"
"""Where an instruction wants the speech; without it the speech comes first."""

# Private-use code points: no instruction or template contains them.
_AUDIO_SENTINEL: Final = "\ue000AUDIO\ue000"
_RESPONSE_SENTINEL: Final = "\ue000RESPONSE\ue000"

# For tokenizers without a template of their own (Meta's tiktoken Llama 3).
LLAMA3_CHAT_TEMPLATE: Final = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


class ChatTemplateError(SpeechMapperError):
    pass


@final
class SpeechPrompt:
    """A chat prompt split at the speech: ``before ; speech ; after``."""

    def __init__(self, before_ids: Tensor, after_ids: Tensor) -> None:
        self.before_ids = before_ids
        self.after_ids = after_ids

    @property
    def num_text_tokens(self) -> int:
        return self.before_ids.numel() + self.after_ids.numel()


@final
class ChatTemplate:
    """Builds speech prompts and responses in the format an instruct LLM was
    tuned on."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        llm_name: str,
        template: str | None = None,
        system_prompt: str | None = None,
    ) -> None:
        """
        :param template: A Jinja chat template overriding the tokenizer's own
            (Hugging Face conventions: ``messages``, ``add_generation_prompt``,
            ``bos_token``, ``eos_token``).
        :param system_prompt: A system message put before every prompt; by
            default none (the template may add its own).
        """
        self._encoder = tokenizer.create_raw_encoder()
        self._llm_name = llm_name
        self._system_prompt = system_prompt

        vocab_info = tokenizer.vocab_info

        if template is None and not hasattr(self._encoder, "apply_chat_template"):
            if any(_single_token_id(self._encoder, token) is None for token in ("<|start_header_id|>", "<|eot_id|>")):
                raise ChatTemplateError(
                    f"The tokenizer of `{llm_name}` has no chat template; set `speech_llm.chat_template` to one (a Jinja string)."
                )

            template = LLAMA3_CHAT_TEMPLATE

        self._template: Any = None

        if template is not None:
            decoder = tokenizer.create_decoder(skip_special_tokens=False)

            def token_text(idx: int | None) -> str:
                return "" if idx is None else decoder(torch.tensor([idx]))

            self._template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)
            self._special_tokens = {
                "bos_token": token_text(vocab_info.bos_idx),
                "eos_token": token_text(vocab_info.eos_idx),
            }

        self.end_of_turn_ids = self._find_end_of_turn()

        stop_ids = set(self.end_of_turn_ids[:1].tolist())
        if vocab_info.eos_idx is not None:
            stop_ids.add(int(vocab_info.eos_idx))

        self.stop_token_ids: frozenset[int] = frozenset(stop_ids)
        """The tokens that end a generated response."""

    def speech_prompt(self, instruction: str) -> SpeechPrompt:
        """The prompt of a user turn holding ``instruction`` and the speech
        (at :data:`AUDIO_PLACEHOLDER`, else before the instruction), followed
        by the start of the assistant's turn."""
        if AUDIO_PLACEHOLDER in instruction:
            content = instruction.replace(AUDIO_PLACEHOLDER, _AUDIO_SENTINEL, 1)
        else:
            content = f"{_AUDIO_SENTINEL}\n{instruction}"

        text = self._render([{"role": "user", "content": content}], add_generation_prompt=True)

        parts = text.split(_AUDIO_SENTINEL)
        if len(parts) != 2:
            raise ChatTemplateError(f"The chat template of `{self._llm_name}` does not keep the user's message intact.")

        return SpeechPrompt(self._encode(parts[0]), self._encode(parts[1]))

    def text_prompt(self, message: str) -> str:
        """A text-only user turn followed by the start of the assistant's turn,
        as text (its special tokens are recognised when it is encoded)."""
        return self._render([{"role": "user", "content": message}], add_generation_prompt=True)

    def response_ids(self, response: str) -> Tensor:
        """The tokens of an assistant response followed by the template's end of
        turn: what the LLM is trained to produce."""
        return torch.cat([self._encode(response), self.end_of_turn_ids])

    def _find_end_of_turn(self) -> Tensor:
        messages = [
            {"role": "user", "content": "?"},
            {"role": "assistant", "content": _RESPONSE_SENTINEL},
        ]

        text = self._render(messages, add_generation_prompt=False)

        _, sep, suffix = text.partition(_RESPONSE_SENTINEL)
        if not sep:
            raise ChatTemplateError(f"The chat template of `{self._llm_name}` does not render the assistant's message.")

        # What follows the response up to the end-of-turn token, e.g.
        # `<|im_end|>` (ChatML) or `<|eot_id|>` (Llama 3); not the newline after it.
        suffix_ids = self._encode(suffix.rstrip("\n"))
        if suffix_ids.numel() == 0:
            raise ChatTemplateError(
                f"The chat template of `{self._llm_name}` ends the assistant's turn with nothing; set `speech_llm.chat_template`."
            )

        return suffix_ids

    def _render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
        if self._system_prompt is not None:
            messages = [{"role": "system", "content": self._system_prompt}, *messages]

        if self._template is not None:
            return str(
                self._template.render(
                    messages=messages, add_generation_prompt=add_generation_prompt, **self._special_tokens
                )
            )

        apply_chat_template = self._encoder.apply_chat_template  # type: ignore[attr-defined]

        return str(apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt))

    def _encode(self, text: str) -> Tensor:
        return self._encoder(text).to(torch.int64) if text else torch.empty((0,), dtype=torch.int64)


def _single_token_id(encoder: Any, token: str) -> int | None:
    ids = encoder(token)

    return int(ids[0]) if ids.numel() == 1 else None
