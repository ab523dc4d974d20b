from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import Tensor

from fairseq2.assets import AssetCard
from fairseq2.models import load_model
from fairseq2.models.hg import get_hugging_face_converter
from fairseq2.models.llama import LLaMAConfig, create_llama_model

from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD, TINY_QWEN_CARD, TINY_SPEECH_ENCODER_CARD
from fairseq2_speechmapper.stage1.embedding_table import (
    EMBEDDING_KEY,
    EmbeddingTableError,
    load_embedding_table,
)

CPU = torch.device("cpu")


def _llm_embedding(card: str | AssetCard) -> Tensor:
    model = load_model(card, device=CPU)

    return model.decoder_frontend.embed.weight.detach()  # type: ignore[union-attr, operator]


@pytest.mark.parametrize("card_name", [TINY_LLAMA_CARD, TINY_QWEN_CARD])
def test_table_equals_the_loaded_llm_embedding(card_name: str) -> None:
    table = load_embedding_table(card_name, device=CPU)

    expected = _llm_embedding(card_name)

    assert table.shape == expected.shape
    assert table.dtype == expected.dtype
    assert torch.equal(table, expected)
    assert not table.requires_grad


def test_dtype_and_device_are_applied() -> None:
    table = load_embedding_table(TINY_QWEN_CARD, device=CPU, dtype=torch.bfloat16)

    assert table.dtype == torch.bfloat16
    assert table.device == CPU
    assert torch.equal(table, _llm_embedding(TINY_QWEN_CARD).to(torch.bfloat16))


def test_the_table_owns_its_memory() -> None:
    # A view of the memory-mapped checkpoint would change with the file.
    first = load_embedding_table(TINY_LLAMA_CARD, device=CPU)
    first.zero_()

    second = load_embedding_table(TINY_LLAMA_CARD, device=CPU)

    assert torch.count_nonzero(second) > 0


def _llama_config(**kwargs: object) -> LLaMAConfig:
    fields: dict[str, object] = dict(
        model_dim=64,
        max_seq_len=64,
        vocab_size=96,
        tied_embeddings=False,
        num_layers=3,
        num_attn_heads=4,
        num_key_value_heads=2,
        ffn_inner_dim=128,
        ffn_inner_dim_scale=1.0,
        ffn_inner_dim_multiplier=1.0,
        ffn_inner_dim_multiple_of=1,
        use_scaled_rope=False,
        pad_idx=None,
    )

    fields.update(kwargs)

    return LLaMAConfig(**fields)  # type: ignore[arg-type]


def _llama_card(name: str, config: LLaMAConfig, checkpoint: Path) -> AssetCard:
    fields = (
        "model_dim", "max_seq_len", "vocab_size", "tied_embeddings", "num_layers",
        "num_attn_heads", "num_key_value_heads", "ffn_inner_dim", "ffn_inner_dim_scale",
        "ffn_inner_dim_multiplier", "ffn_inner_dim_multiple_of", "use_scaled_rope", "pad_idx",
    )  # fmt: skip

    metadata = {
        "name": name,
        "model_family": "llama",
        "model_arch": "llama3_2_1b",
        "model_config": {field: getattr(config, field) for field in fields},
        "checkpoint": str(checkpoint),
    }

    return AssetCard(name, metadata)


def _save_hf_shards(state_dict: dict[str, Tensor], output_dir: Path, num_shards: int) -> None:
    """Saves ``state_dict`` the way Hugging Face does: ``model-K-of-N.safetensors``
    plus ``model.safetensors.index.json``."""
    from safetensors.torch import save_file

    output_dir.mkdir(parents=True, exist_ok=True)

    keys = list(state_dict)

    weight_map = {}

    shard_size = math.ceil(len(keys) / num_shards)

    for idx in range(num_shards):
        file_name = f"model-{idx + 1:05d}-of-{num_shards:05d}.safetensors"

        shard = {k: state_dict[k].contiguous() for k in keys[idx * shard_size : (idx + 1) * shard_size]}

        save_file(shard, output_dir / file_name, metadata={"format": "pt"})

        weight_map.update({k: file_name for k in shard})

    index = {"metadata": {}, "weight_map": weight_map}

    output_dir.joinpath("model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")


@pytest.mark.parametrize(
    ("layout", "tied_embeddings"),
    [("safetensors_shards", False), ("safetensors_shards", True), ("pytorch_bin", False)],
)
def test_hugging_face_llama(tmp_path: Path, layout: str, tied_embeddings: bool) -> None:
    config = _llama_config(tied_embeddings=tied_embeddings, shard_embed_dim=not tied_embeddings)

    torch.manual_seed(1)

    model = create_llama_model(config)

    # The Hugging Face layout (renamed keys, q/k rows permuted for RoPE).
    hg_state_dict = get_hugging_face_converter("llama").to_hg_state_dict(dict(model.state_dict()), config)

    hg_tensors = {k: v for k, v in hg_state_dict.items() if isinstance(v, Tensor)}

    if layout == "safetensors_shards":
        checkpoint = tmp_path / "hf"

        _save_hf_shards(hg_tensors, checkpoint, num_shards=3)
    else:
        checkpoint = tmp_path / "pytorch_model.bin"

        torch.save(hg_tensors, checkpoint)

    card = _llama_card("test_hf_llama", config, checkpoint)

    table = load_embedding_table(card, device=CPU)

    assert torch.equal(table, model.decoder_frontend.embed.weight.detach())  # type: ignore[union-attr, operator]
    assert torch.equal(table, _llm_embedding(card))


def test_fairseq2_training_checkpoint_takes_the_streaming_path(tmp_path: Path) -> None:
    config = _llama_config()

    model = create_llama_model(config)

    # The layout of a fairseq2 training checkpoint's model directory.
    shard_file = tmp_path / "model" / "pp_00" / "tp_00" / "sdp_00.pt"
    shard_file.parent.mkdir(parents=True)

    torch.save(model.state_dict(), shard_file)

    card = _llama_card("test_native_llama", config, tmp_path / "model")

    table = load_embedding_table(card, device=CPU)

    assert torch.equal(table, model.decoder_frontend.embed.weight.detach())  # type: ignore[union-attr, operator]


def _assert_one_line_error(ex: pytest.ExceptionInfo[EmbeddingTableError], name: str) -> None:
    message = str(ex.value)

    assert "\n" not in message
    assert f"`{name}`" in message
    assert EMBEDDING_KEY in message
    assert ex.value.name == name


def test_unknown_card_is_one_line_error() -> None:
    with pytest.raises(EmbeddingTableError) as ex:
        load_embedding_table("speechmapper_no_such_card")

    _assert_one_line_error(ex, "speechmapper_no_such_card")


def test_card_that_is_not_an_llm_is_one_line_error() -> None:
    with pytest.raises(EmbeddingTableError) as ex:
        load_embedding_table(TINY_SPEECH_ENCODER_CARD)

    _assert_one_line_error(ex, TINY_SPEECH_ENCODER_CARD)

    assert "does not hold an LLM" in str(ex.value)


def test_card_without_checkpoint_is_one_line_error() -> None:
    card = AssetCard(
        "test_gated_llama", {"name": "test_gated_llama", "model_family": "llama", "model_arch": "llama3_2_1b"}
    )

    with pytest.raises(EmbeddingTableError) as ex:
        load_embedding_table(card)

    _assert_one_line_error(ex, "test_gated_llama")


# Big enough that reading the non-embedding weights is unmistakable, small
# enough to read in well under a second: 480 MiB of layers in fp32 around a
# 16 MiB table; the q/k projections that fairseq2's LLaMA converter permutes
# (copies) are 64 MiB.
_BIG_CONFIG = dict(
    model_dim=1024,
    vocab_size=4096,
    num_layers=8,
    num_attn_heads=16,
    num_key_value_heads=16,
    ffn_inner_dim=3584,
)

_SAFETENSORS_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def _write_sparse_safetensors(
    file: Path, shapes: dict[str, tuple[list[int], torch.dtype]], data: dict[str, Tensor]
) -> None:
    """Writes a Safetensors file whose tensors not in ``data`` are a hole of the
    file (zeros, no disk blocks); mapped pages of a hole count in the RSS like
    any other."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}

    offset = 0

    for key, (shape, dtype) in shapes.items():
        num_bytes = math.prod(shape) * dtype.itemsize

        header[key] = {"dtype": _SAFETENSORS_DTYPE[dtype], "shape": shape, "data_offsets": [offset, offset + num_bytes]}

        offset += num_bytes

    header_bytes = json.dumps(header).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)

    data_start = 8 + len(header_bytes)

    with file.open("wb") as fp:
        fp.write(len(header_bytes).to_bytes(8, "little"))
        fp.write(header_bytes)

        for key, tensor in data.items():
            begin, _ = header[key]["data_offsets"]  # type: ignore[index]

            fp.seek(data_start + begin)
            fp.write(tensor.contiguous().view(torch.uint8).numpy().tobytes())

        fp.truncate(data_start + offset)


def _write_big_hf_llama(output_dir: Path, config: LLaMAConfig, embed: Tensor, num_shards: int) -> int:
    """Writes a Hugging Face-layout LLaMA checkpoint whose only data is
    ``embed``; returns its size in bytes."""
    with torch.device("meta"):
        meta_model = create_llama_model(config)

    hg_state_dict = get_hugging_face_converter("llama").to_hg_state_dict(dict(meta_model.state_dict()), config)

    shapes = {k: (list(v.shape), torch.float32) for k, v in hg_state_dict.items() if isinstance(v, Tensor)}

    embed_key = "model.embed_tokens.weight"

    assert shapes[embed_key][0] == list(embed.shape)

    output_dir.mkdir(parents=True)

    keys = [k for k in shapes if k != embed_key]

    shard_size = math.ceil(len(keys) / num_shards)

    weight_map = {}

    for idx in range(num_shards):
        file_name = f"model-{idx + 1:05d}-of-{num_shards:05d}.safetensors"

        shard_keys = keys[idx * shard_size : (idx + 1) * shard_size]

        # The table sits in the middle of a shard, between untouched tensors.
        data = {}
        if idx == num_shards // 2:
            shard_keys.insert(len(shard_keys) // 2, embed_key)

            data[embed_key] = embed

        _write_sparse_safetensors(output_dir / file_name, {k: shapes[k] for k in shard_keys}, data)

        weight_map.update({k: file_name for k in shard_keys})

    index = {"metadata": {}, "weight_map": weight_map}

    output_dir.joinpath("model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")

    return sum(f.stat().st_size for f in output_dir.glob("*.safetensors"))


# Run in a fresh interpreter: the peak RSS is per process, and the parent holds
# pytest's and other tests' memory.
_MEASURE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    import torch

    from fairseq2.assets import AssetCard
    from fairseq2.models.llama import get_llama_model_hub

    from fairseq2_speechmapper.stage1.embedding_table import EMBEDDING_KEY, load_embedding_table
    from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD

    def reset_peak():
        # Linux: resets VmHWM to the current RSS.
        with open("/proc/self/clear_refs", "w") as fp:
            fp.write("5")

        return read_status("VmRSS")

    def read_status(field):
        with open("/proc/self/status") as fp:
            for line in fp:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    cpu = torch.device("cpu")

    # Warm-up: fairseq2's set-up, lazy imports and the allocator's first arenas.
    load_embedding_table(TINY_LLAMA_CARD, device=cpu)

    metadata = json.loads(sys.argv[1])

    card = AssetCard(metadata["name"], metadata)

    base = reset_peak()
    table = load_embedding_table(card, device=cpu)
    lazy = read_status("VmHWM") - base

    checksum = float(table.double().sum())

    del table

    # The same process reading every tensor proves that the measurement sees
    # checkpoint pages: it must come close to the checkpoint size.
    hub = get_llama_model_hub()
    config = hub.get_model_config(card)

    base = reset_peak()
    for key, tensor in hub.iter_checkpoint(Path(metadata["checkpoint"]), config, mmap=True):
        tensor.sum()
    full = read_status("VmHWM") - base

    print(json.dumps({"lazy": lazy, "full": full, "checksum": checksum}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc")
def test_never_materialises_other_llm_weights(tmp_path: Path) -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("the kernel does not let a process reset its peak RSS")

    config = _llama_config(**_BIG_CONFIG)

    embed = torch.randn(config.vocab_size, config.model_dim, generator=torch.Generator().manual_seed(3))

    checkpoint_size = _write_big_hf_llama(tmp_path / "hf", config, embed, num_shards=4)

    table_size = embed.numel() * embed.element_size()

    card = _llama_card("test_big_hf_llama", config, tmp_path / "hf")

    result = subprocess.run(
        [sys.executable, "-c", _MEASURE_SCRIPT, json.dumps(dict(card.metadata))],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr

    measured = json.loads(result.stdout.strip().splitlines()[-1])

    assert measured["checksum"] == pytest.approx(float(embed.double().sum()), rel=1e-9, abs=1e-6)

    # The measurement sees the checkpoint's pages when they are read.
    assert measured["full"] > 0.8 * checkpoint_size

    # Safetensors shards are read straight into the table: one table and a
    # little slack (measured: 17.8 MiB for the 16 MiB table). Copying out of a
    # memory map would be two tables; fairseq2's iter_checkpoint, stopped at
    # the key, 131 MiB (it permutes every q/k projection first).
    assert measured["lazy"] < 1.25 * table_size + 8 * 2**20, measured
    assert measured["lazy"] < 0.1 * checkpoint_size, measured
