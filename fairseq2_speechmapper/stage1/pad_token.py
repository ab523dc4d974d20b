"""The pad token whose embedding pads the stage-1 targets."""

from __future__ import annotations

from typing import Final

import torch

from fairseq2.data.tokenizers import Tokenizer

from fairseq2_speechmapper.errors import SpeechMapperError

# Tried in order when the tokenizer has no pad token: tokens that LLM
# vocabularies reserve and never produce in text.
_RESERVED_PAD_TOKENS: Final = (
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_0|>",
    "<pad>",
    "<|pad|>",
)


class PadTokenError(SpeechMapperError):
    pass


def resolve_pad_idx(tokenizer: Tokenizer, pad_token: str | None, *, llm_name: str) -> int:
    """Returns the id of pad_token; by default the tokenizer's pad token,
    else the first reserved token the vocabulary has."""
    if pad_token is None:
        pad_idx = tokenizer.vocab_info.pad_idx
        if pad_idx is not None:
            return int(pad_idx)

        for candidate in _RESERVED_PAD_TOKENS:
            candidate_idx = _maybe_single_token_idx(tokenizer, candidate)
            if candidate_idx is not None:
                return candidate_idx

        raise PadTokenError(
            f"The tokenizer of `{llm_name}` has no pad token and none of {', '.join(_RESERVED_PAD_TOKENS)}; set `llm.pad_token` to an unused token of its vocabulary."
        )

    pad_idx = _maybe_single_token_idx(tokenizer, pad_token)
    if pad_idx is None:
        raise PadTokenError(f"`llm.pad_token` {pad_token!r} is not a single token of the `{llm_name}` vocabulary.")

    return pad_idx


def _maybe_single_token_idx(tokenizer: Tokenizer, token: str) -> int | None:
    ids = tokenizer.create_raw_encoder()(token)

    return int(ids[0]) if ids.numel() == 1 else None


def decode_token(tokenizer: Tokenizer, token_idx: int) -> str:
    return tokenizer.create_decoder(skip_special_tokens=False)(torch.tensor([token_idx]))
