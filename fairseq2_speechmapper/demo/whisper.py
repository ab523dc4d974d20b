"""Converts faster-whisper's ``tiny.en`` (CTranslate2, float16) into a Hugging
Face ``WhisperModel`` laid out as a Hugging Face hub cache.

Why a hub cache: fairseq2's ``hg`` model family resolves ``hf_name`` through
``huggingface_hub.snapshot_download`` (``fairseq2.models.hg.factory``), which
rejects local paths as repository ids. A ``models--ORG--NAME/snapshots/REV``
folder with ``refs/main`` under ``HF_HUB_CACHE`` is found offline
(``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

import numpy as np
import torch
from torch import Tensor

from fairseq2_speechmapper.demo.ct2 import CT2Model, read_ct2_model
from fairseq2_speechmapper.demo.errors import DemoAssetError
from fairseq2_speechmapper.demo.sources import WHISPER_TINY_EN_CT2, locate_packaged_file

if TYPE_CHECKING:
    from transformers import WhisperConfig

WHISPER_CARD: Final = "whisper_tiny_en_encoder"

WHISPER_HF_REPO: Final = "fairseq2-speechmapper/whisper-tiny.en"
"""The repository id under which the converted model sits in the hub cache."""

# The special tokens of the English-only Whisper vocabulary (51864 entries).
_EOT_ID: Final = 50256
_SOT_ID: Final = 50257


@final
@dataclass(kw_only=True)
class WhisperConversion:
    hub_cache_dir: Path
    """The directory to use as ``HF_HUB_CACHE``."""

    snapshot_dir: Path
    """The Hugging Face checkpoint (``config.json``, ``model.safetensors``)."""

    num_parameters: int


def locate_whisper_ct2() -> Path:
    return locate_packaged_file(WHISPER_TINY_EN_CT2)


def read_whisper_ct2(path: Path) -> CT2Model:
    model = read_ct2_model(path, fix=f"reinstall it with `{WHISPER_TINY_EN_CT2.pip_command} --force-reinstall`")

    if model.spec_name != "WhisperSpec":
        raise DemoAssetError(
            f"{path} holds a {model.spec_name}, not a Whisper model; reinstall it with `{WHISPER_TINY_EN_CT2.pip_command} --force-reinstall`."
        )

    return model


def convert_whisper(ct2_file: Path, hub_cache_dir: Path) -> WhisperConversion:
    """Writes the converted model into ``hub_cache_dir``, which must not exist
    yet (the caller renames it into place when done)."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    ct2_model = read_whisper_ct2(ct2_file)

    config = whisper_config_from_ct2(ct2_model)

    model = WhisperModel(config)

    # Strict: every parameter and buffer of the HF model must come from the file.
    model.load_state_dict(whisper_state_dict_from_ct2(ct2_model, config), strict=True)

    # The snapshot revision is derived from the source, as the hub derives it
    # from the commit; it only has to be a 40-digit hex string.
    revision = _sha1_of_file(ct2_file)

    repo_dir = hub_cache_dir / ("models--" + WHISPER_HF_REPO.replace("/", "--"))

    snapshot_dir = repo_dir / "snapshots" / revision

    model.save_pretrained(snapshot_dir, safe_serialization=True)

    # The feature extractor and tokenizer travel along for the demo recipes.
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(snapshot_dir)

    shutil.copyfile(ct2_file.parent / "tokenizer.json", snapshot_dir / "tokenizer.json")

    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision, encoding="utf-8")

    num_parameters = sum(p.numel() for p in model.parameters())

    return WhisperConversion(hub_cache_dir=hub_cache_dir, snapshot_dir=snapshot_dir, num_parameters=num_parameters)


def whisper_config_from_ct2(ct2_model: CT2Model) -> WhisperConfig:
    from transformers import WhisperConfig

    v = ct2_model.variables

    d_model = v["encoder/layer_norm/gamma"].shape[0]

    vocab_size = v["decoder/embeddings/weight"].shape[0]

    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=v["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_count_layers(v, "encoder"),
        decoder_layers=_count_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        scale_embedding=bool(v["decoder/scale_embeddings"]),
        bos_token_id=_EOT_ID,
        eos_token_id=_EOT_ID,
        pad_token_id=_EOT_ID,
        decoder_start_token_id=_SOT_ID,
        torch_dtype="float32",
    )


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    num_layers = 0
    while f"{stack}/layer_{num_layers}/ffn/linear_0/weight" in variables:
        num_layers += 1

    return num_layers


def whisper_state_dict_from_ct2(ct2_model: CT2Model, config: WhisperConfig) -> dict[str, Tensor]:
    """Reverses ctranslate2's Whisper converter: float16 weights become float32
    (exactly), fused projections are split, nothing is scaled or permuted."""
    v = ct2_model.variables

    def get(name: str) -> Tensor:
        return torch.from_numpy(v[name].astype(np.float32))

    state_dict: dict[str, Tensor] = {}

    def layer_norm(hf: str, ct2: str) -> None:
        state_dict[f"{hf}.weight"] = get(f"{ct2}/gamma")
        state_dict[f"{hf}.bias"] = get(f"{ct2}/beta")

    def linear(hf: str, ct2: str) -> None:
        state_dict[f"{hf}.weight"] = get(f"{ct2}/weight")
        state_dict[f"{hf}.bias"] = get(f"{ct2}/bias")

    def split_linear(hf_names: list[str], ct2: str) -> None:
        weights = get(f"{ct2}/weight").chunk(len(hf_names), dim=0)
        biases = get(f"{ct2}/bias").chunk(len(hf_names), dim=0)

        for hf, weight, bias in zip(hf_names, weights, biases):
            state_dict[f"{hf}.weight"] = weight.clone()

            # Whisper's key projections have no bias; ctranslate2 fills zeros.
            if hf.endswith("k_proj"):
                if bias.any():
                    raise DemoAssetError(f"{ct2}/bias has a non-zero key bias, which Whisper has not.")
            else:
                state_dict[f"{hf}.bias"] = bias.clone()

    def ffn(hf: str, ct2: str) -> None:
        layer_norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")

    def self_attention(hf: str, ct2: str) -> None:
        layer_norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        split_linear([f"{hf}.self_attn.{p}_proj" for p in "qkv"], f"{ct2}/self_attention/linear_0")
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")

    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    state_dict["encoder.embed_positions.weight"] = get("encoder/position_encodings/encodings")

    for i in range(config.encoder_layers):
        self_attention(f"encoder.layers.{i}", f"encoder/layer_{i}")
        ffn(f"encoder.layers.{i}", f"encoder/layer_{i}")

    layer_norm("encoder.layer_norm", "encoder/layer_norm")

    state_dict["decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    state_dict["decoder.embed_positions.weight"] = get("decoder/position_encodings/encodings")

    for i in range(config.decoder_layers):
        hf, ct2 = f"decoder.layers.{i}", f"decoder/layer_{i}"

        self_attention(hf, ct2)

        # Cross-attention: linear_0 is q, linear_1 the fused [k; v], linear_2 out.
        layer_norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
        linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
        split_linear([f"{hf}.encoder_attn.{p}_proj" for p in "kv"], f"{ct2}/attention/linear_1")
        linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")

        ffn(hf, ct2)

    layer_norm("decoder.layer_norm", "decoder/layer_norm")

    return state_dict


def _sha1_of_file(path: Path) -> str:
    digest = hashlib.sha1()

    with path.open("rb") as fp:
        while chunk := fp.read(1 << 20):
            digest.update(chunk)

    return digest.hexdigest()


def whisper_card(conversion: WhisperConversion) -> dict[str, object]:
    return {
        "name": WHISPER_CARD,
        "model_family": "hg",
        "model_arch": "auto",
        "model_config": {"hf_name": WHISPER_HF_REPO, "model_type": "auto"},
        # fairseq2 loads this checkpoint into what `from_pretrained` built; the
        # keys are the HF module's own, so no state-dict converter is needed.
        "checkpoint": str(conversion.snapshot_dir.resolve()),
        "hf_hub_cache": str(conversion.hub_cache_dir.resolve()),
    }
