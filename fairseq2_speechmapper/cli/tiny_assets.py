"""Tiny random-weight models of real fairseq2 families, with real tokenizers
trained offline, for tests and the install self-check.

Everything is written as ordinary checkpoints plus asset cards, so that the
tiny assets load through fairseq2's own hubs (``load_model``,
``load_tokenizer``): the same code path as real checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
from torch.nn import Module

from fairseq2.models.llama import LLaMAConfig, create_llama_model
from fairseq2.models.qwen import QwenConfig, create_qwen_model
from fairseq2.models.wav2vec2 import Wav2Vec2Config, create_wav2vec2_model

from fairseq2_speechmapper.asset_store.card_files import write_card_file
from fairseq2_speechmapper.models.speechmapper import (
    create_speechmapper_model,
    tiny_speechmapper_config,
)

TINY_SPEECH_ENCODER_CARD: Final = "speechmapper_tiny_wav2vec2"
TINY_LLAMA_CARD: Final = "speechmapper_tiny_llama_instruct"
TINY_QWEN_CARD: Final = "speechmapper_tiny_qwen_chat"
TINY_MAPPER_CARD: Final = "speechmapper_tiny"
TINY_MAPPER_QWEN_CARD: Final = "speechmapper_tiny_qwen"

TINY_SPEECH_ENCODER_DIM: Final = 64
TINY_SPEECH_ENCODER_NUM_LAYERS: Final = 2
TINY_LLM_DIM: Final = 64

# Bumped whenever what is written changes, so stale directories are rebuilt.
_VERSION: Final = 2

# Self-written sentences for training the tiny tokenizers' BPE merges; byte-level
# BPE still encodes any text.
_TOKENIZER_CORPUS: Final = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "a speech model maps sound to the embeddings of a language model",
    "transcribe the audio into text",
    "translate the audio into german",
    "what is said in this recording",
    "repeat exactly what the speaker says",
    "one two three four five six seven eight nine ten",
    "hello world this is a small test of the tokenizer",
    "the weather today is cold and windy with rain in the evening",
    "please answer the question about the audio",
    "numbers like 2026 and 42 are split into digits",
]

LLAMA3_SPECIAL_TOKENS: Final = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
]

QWEN_SPECIAL_TOKENS: Final = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_LLAMA3_CHAT_TEMPLATE: Final = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

_CHATML_TEMPLATE: Final = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(kw_only=True)
class TinyAssets:
    """Where :func:`write_tiny_assets` put its files."""

    root_dir: Path
    """The directory of the checkpoints and tokenizers."""

    card_file: Path
    """The YAML file holding the cards of all tiny assets."""


def write_tiny_assets(root_dir: Path, cards_dir: Path, *, seed: int = 0) -> TinyAssets:
    """Writes the tiny speech encoder, LLMs, tokenizers and mapper to ``root_dir`` and their
    cards to ``cards_dir/tiny.yaml``; a no-op when they are already there."""
    card_file = cards_dir / "tiny.yaml"

    stamp_file = root_dir / "VERSION"

    if card_file.exists() and _read_stamp(stamp_file) == _VERSION:
        return TinyAssets(root_dir=root_dir, card_file=card_file)

    root_dir.mkdir(parents=True, exist_ok=True)

    generator_state = torch.random.get_rng_state()

    torch.manual_seed(seed)

    try:
        cards = _write_all(root_dir)
    finally:
        torch.random.set_rng_state(generator_state)

    for card in cards:
        for field in ("checkpoint", "tokenizer"):
            if field in card:
                card[field] = str((root_dir / card[field]).resolve())

    write_card_file(card_file, cards)

    stamp_file.write_text(f"{_VERSION}\n", encoding="utf-8")

    return TinyAssets(root_dir=root_dir, card_file=card_file)


def _read_stamp(stamp_file: Path) -> int | None:
    try:
        return int(stamp_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _write_all(root_dir: Path) -> list[dict[str, object]]:
    speech_encoder_config = tiny_wav2vec2_config()
    _save_model(create_wav2vec2_model(speech_encoder_config), root_dir / "wav2vec2.pt")

    llama_tokenizer_dir = root_dir / "llama_tokenizer"
    llama_vocab_size = write_tiny_hg_tokenizer(
        llama_tokenizer_dir,
        special_tokens=LLAMA3_SPECIAL_TOKENS,
        chat_template=_LLAMA3_CHAT_TEMPLATE,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
    )

    llama_config = tiny_llama_config(_round_up(llama_vocab_size, 64))
    llama_config.pad_idx = _token_id(llama_tokenizer_dir, "<|finetune_right_pad_id|>")
    _save_model(create_llama_model(llama_config), root_dir / "llama.pt")

    qwen_tokenizer_dir = root_dir / "qwen_tokenizer"
    qwen_vocab_size = write_tiny_hg_tokenizer(
        qwen_tokenizer_dir,
        special_tokens=QWEN_SPECIAL_TOKENS,
        chat_template=_CHATML_TEMPLATE,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )

    qwen_config = tiny_qwen_config(_round_up(qwen_vocab_size, 64))
    _save_model(create_qwen_model(qwen_config), root_dir / "qwen.pt")

    mapper_config = tiny_speechmapper_config()
    _save_model(create_speechmapper_model(mapper_config), root_dir / "mapper.pt")
    _save_model(create_speechmapper_model(mapper_config), root_dir / "mapper_qwen.pt")

    return [
        {
            "name": TINY_SPEECH_ENCODER_CARD,
            "model_family": "wav2vec2",
            "model_arch": "base",
            "model_config": _wav2vec2_overrides(speech_encoder_config),
            "checkpoint": "wav2vec2.pt",
        },
        {
            "name": TINY_LLAMA_CARD,
            "model_family": "llama",
            "model_arch": "llama3_2_1b",
            "model_config": _config_overrides(llama_config, _LLAMA_OVERRIDE_FIELDS),
            "checkpoint": "llama.pt",
            "tokenizer": "llama_tokenizer",
            "tokenizer_family": "llama",
            "tokenizer_config": {"impl": "hg", "use_eot": True},
        },
        {
            "name": TINY_QWEN_CARD,
            "model_family": "qwen",
            "model_arch": "qwen3_0.6b",
            "model_config": _config_overrides(qwen_config, _QWEN_OVERRIDE_FIELDS),
            "checkpoint": "qwen.pt",
            "tokenizer": "qwen_tokenizer",
            "tokenizer_family": "qwen",
            "tokenizer_config": {"use_im_end": True},
        },
        {
            "name": TINY_MAPPER_CARD,
            "model_family": "speechmapper",
            "model_arch": "tiny",
            "checkpoint": "mapper.pt",
            "speech_encoder": TINY_SPEECH_ENCODER_CARD,
            "speech_encoder_layer": TINY_SPEECH_ENCODER_NUM_LAYERS,
            "llm": TINY_LLAMA_CARD,
        },
        {
            "name": TINY_MAPPER_QWEN_CARD,
            "model_family": "speechmapper",
            "model_arch": "tiny",
            "checkpoint": "mapper_qwen.pt",
            "speech_encoder": TINY_SPEECH_ENCODER_CARD,
            "speech_encoder_layer": TINY_SPEECH_ENCODER_NUM_LAYERS,
            "llm": TINY_QWEN_CARD,
        },
    ]


def tiny_wav2vec2_config() -> Wav2Vec2Config:
    config = Wav2Vec2Config()

    encoder_config = config.encoder_config
    encoder_config.model_dim = TINY_SPEECH_ENCODER_DIM
    encoder_config.feature_dim = 32
    # The 320-sample stride of wav2vec2 base, with narrower convolutions.
    encoder_config.feature_extractor_layer_descs = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
    encoder_config.num_encoder_layers = TINY_SPEECH_ENCODER_NUM_LAYERS
    encoder_config.num_encoder_attn_heads = 4
    encoder_config.ffn_inner_dim = 128
    encoder_config.pos_conv_kernel_size = 16
    encoder_config.num_pos_conv_groups = 4

    config.final_dim = 32
    config.quantized_dim = 32
    config.num_codebook_entries = 16

    return config


def tiny_decoder_lm_shape(vocab_size: int) -> dict[str, Any]:
    """The shape the tiny LLaMA and Qwen share (``TINY_LLM_DIM`` wide, two
    layers, grouped-query attention, tied embeddings): the keyword arguments of
    their configs."""
    return dict(
        model_dim=TINY_LLM_DIM,
        max_seq_len=1024,
        vocab_size=vocab_size,
        tied_embeddings=True,
        num_layers=2,
        num_attn_heads=4,
        num_key_value_heads=2,
        ffn_inner_dim=128,
    )


def tiny_llama_config(vocab_size: int) -> LLaMAConfig:
    return LLaMAConfig(
        **tiny_decoder_lm_shape(vocab_size),
        ffn_inner_dim_scale=1.0,
        ffn_inner_dim_multiple_of=1,
        rope_theta=500_000.0,
        use_scaled_rope=False,
        # Tied embeddings need a vocabulary-sharded table.
        shard_embed_dim=False,
    )


def tiny_qwen_config(vocab_size: int) -> QwenConfig:
    return QwenConfig(**tiny_decoder_lm_shape(vocab_size), head_dim=16, qkv_proj_bias=False, q_norm=True, k_norm=True)


def write_tiny_hg_tokenizer(
    output_dir: Path,
    *,
    special_tokens: list[str],
    chat_template: str,
    bos_token: str | None,
    eos_token: str,
    pad_token: str,
    vocab_size: int = 384,
) -> int:
    """Trains a byte-level BPE tokenizer on a few sentences and saves it in the
    Hugging Face layout with the given special tokens and chat template.

    :returns: The number of tokens, special tokens included.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())

    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()

    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    tokenizer.train_from_iterator(_TOKENIZER_CORPUS, trainer)

    hg_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
    )

    hg_tokenizer.chat_template = chat_template

    output_dir.mkdir(parents=True, exist_ok=True)

    hg_tokenizer.save_pretrained(output_dir)

    return len(hg_tokenizer)


def _token_id(tokenizer_dir: Path, token: str) -> int:
    with (tokenizer_dir / "tokenizer.json").open(encoding="utf-8") as fp:
        tokenizer = json.load(fp)

    for added_token in tokenizer["added_tokens"]:
        if added_token["content"] == token:
            return int(added_token["id"])

    raise ValueError(f"{token} is not a token of {tokenizer_dir}.")


def _save_model(model: Module, path: Path) -> None:
    torch.save(model.state_dict(), path)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _wav2vec2_overrides(config: Wav2Vec2Config) -> dict[str, object]:
    encoder_config = config.encoder_config

    return {
        "encoder_config": {
            "model_dim": encoder_config.model_dim,
            "feature_dim": encoder_config.feature_dim,
            "feature_extractor_layer_descs": [list(d) for d in encoder_config.feature_extractor_layer_descs],
            "num_encoder_layers": encoder_config.num_encoder_layers,
            "num_encoder_attn_heads": encoder_config.num_encoder_attn_heads,
            "ffn_inner_dim": encoder_config.ffn_inner_dim,
            "pos_conv_kernel_size": encoder_config.pos_conv_kernel_size,
            "num_pos_conv_groups": encoder_config.num_pos_conv_groups,
        },
        "final_dim": config.final_dim,
        "quantized_dim": config.quantized_dim,
        "num_codebook_entries": config.num_codebook_entries,
    }


def _config_overrides(config: object, field_names: list[str]) -> dict[str, object]:
    return {name: getattr(config, name) for name in field_names}


_LLM_OVERRIDE_FIELDS: Final = [
    "model_dim",
    "max_seq_len",
    "vocab_size",
    "tied_embeddings",
    "num_layers",
    "num_attn_heads",
    "num_key_value_heads",
    "ffn_inner_dim",
]

_LLAMA_OVERRIDE_FIELDS: Final = _LLM_OVERRIDE_FIELDS + [
    "pad_idx",
    "ffn_inner_dim_scale",
    "ffn_inner_dim_multiplier",
    "ffn_inner_dim_multiple_of",
    "rope_theta",
    "use_scaled_rope",
    "shard_embed_dim",
]

_QWEN_OVERRIDE_FIELDS: Final = _LLM_OVERRIDE_FIELDS + [
    "head_dim",
    "qkv_proj_bias",
    "q_norm",
    "k_norm",
]
