from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from fairseq2.assets import AssetCard
from fairseq2.nn import BatchLayout
from fairseq2.nn.utils.padding import pad_seqs

from fairseq2_speechmapper.asset_store.paths import CACHE_DIR_ENV
from fairseq2_speechmapper.demo import WHISPER_CARD, DemoAssets
from fairseq2_speechmapper.speech_encoders import SpeechEncoderOptions, WhisperWindow, load_speech_encoder
from fairseq2_speechmapper.speech_encoders.whisper import WhisperSpeechEncoder

_TINY_WHISPER_REPO = "speechmapper-test/tiny-whisper"
_TINY_BERT_REPO = "speechmapper-test/tiny-bert"

# 1 sample, an odd length, and the last 20 ms of the 30 s window.
_NUM_SAMPLES = [1, 24_321, 479_900, 480_000]


def _write_hub_repo(hub_cache_dir: Path, repo_id: str, model: torch.nn.Module) -> Path:
    """Lays ``model`` out as the hub cache does, which fairseq2's ``hg`` family needs."""
    revision = hashlib.sha1(repo_id.encode()).hexdigest()

    repo_dir = hub_cache_dir / ("models--" + repo_id.replace("/", "--"))

    snapshot_dir = repo_dir / "snapshots" / revision

    model.save_pretrained(snapshot_dir, safe_serialization=True)  # type: ignore[operator]

    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision, encoding="utf-8")

    return snapshot_dir


def _hg_card(name: str, repo_id: str, snapshot_dir: Path, hub_cache_dir: Path) -> AssetCard:
    card = {
        "name": name,
        "model_family": "hg",
        "model_arch": "auto",
        "model_config": {"hf_name": repo_id, "model_type": "auto"},
        "checkpoint": str(snapshot_dir),
        "hf_hub_cache": str(hub_cache_dir),
    }

    return AssetCard(name, card)


class _TinyHub:
    def __init__(self, root_dir: Path) -> None:
        from transformers import BertConfig, BertModel, WhisperConfig, WhisperModel

        self.hub_cache_dir = root_dir / "hub"

        torch.manual_seed(0)

        whisper_config = WhisperConfig(
            vocab_size=64,
            num_mel_bins=80,
            d_model=32,
            encoder_layers=2,
            encoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_layers=1,
            decoder_attention_heads=2,
            decoder_ffn_dim=64,
            max_source_positions=1500,
            max_target_positions=16,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
            decoder_start_token_id=2,
            # Larger than the default 0.02, so that inputs visibly move the outputs.
            init_std=0.2,
        )

        whisper = WhisperModel(whisper_config).eval()

        snapshot_dir = _write_hub_repo(self.hub_cache_dir, _TINY_WHISPER_REPO, whisper)

        self.whisper_card = _hg_card("tiny_whisper_test", _TINY_WHISPER_REPO, snapshot_dir, self.hub_cache_dir)

        # The reference: transformers' own loader, not fairseq2's `hg` family.
        self.reference = WhisperModel.from_pretrained(snapshot_dir).eval()

        bert_config = BertConfig(
            vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
        )

        snapshot_dir = _write_hub_repo(self.hub_cache_dir, _TINY_BERT_REPO, BertModel(bert_config))

        self.bert_card = _hg_card("tiny_bert_test", _TINY_BERT_REPO, snapshot_dir, self.hub_cache_dir)


@pytest.fixture(scope="module")
def tiny_hub(tmp_path_factory: pytest.TempPathFactory) -> _TinyHub:
    return _TinyHub(tmp_path_factory.mktemp("tiny_hub"))


def _noisy_waveform(num_samples: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)

    # A louder stretch, so that the log-mel max (which sets the floor of the
    # zero padding) is not where the audio starts.
    gain = torch.ones(num_samples)
    gain[num_samples // 3 : num_samples // 2] = 4.0

    return (0.05 * gain * torch.randn(num_samples, generator=generator)).clamp(-1.0, 1.0)


def _reference_hidden_states(tiny_hub: _TinyHub, waveform: Tensor) -> tuple[Tensor, ...]:
    """transformers end to end: its feature extractor, its whole encoder."""
    from transformers import WhisperFeatureExtractor

    feature_extractor = WhisperFeatureExtractor(feature_size=80)

    log_mel = feature_extractor(waveform.numpy(), sampling_rate=16_000, return_tensors="pt").input_features

    with torch.no_grad():
        output = tiny_hub.reference.encoder(log_mel, output_hidden_states=True)

    return tuple(output.hidden_states)


def _encode_alone(encoder: WhisperSpeechEncoder, inputs: Tensor) -> tuple[Tensor, BatchLayout]:
    inputs = inputs.unsqueeze(0)

    with torch.no_grad():
        return encoder(inputs, BatchLayout.of(inputs))  # type: ignore[no-any-return]


def test_features_equal_transformers_hidden_states(tiny_hub: _TinyHub) -> None:
    encoders = {layer: load_speech_encoder(tiny_hub.whisper_card, layer=layer) for layer in (1, 2)}

    for layer, encoder in encoders.items():
        assert isinstance(encoder, WhisperSpeechEncoder)
        assert encoder.layer == layer
        assert encoder.output_dim == 32
        assert not encoder.training
        assert all(not p.requires_grad for p in encoder.parameters())

    for seed, num_samples in enumerate(_NUM_SAMPLES):
        waveform = _noisy_waveform(num_samples, seed)

        # hidden_states[k] is layer k's output, hidden_states[-1] normalised.
        hidden_states = _reference_hidden_states(tiny_hub, waveform)

        # 50 Hz: the encoder frames whose 20 ms hop starts inside the audio.
        num_frames = math.ceil(num_samples / 320)

        for layer, encoder in encoders.items():
            features, layout = _encode_alone(encoder, encoder.prepare_input(waveform, 16_000))  # type: ignore[arg-type]

            assert layout.seq_lens == [num_frames]
            assert features.shape == (1, num_frames, 32)

            torch.testing.assert_close(features[0], hidden_states[layer][0, :num_frames], atol=1e-5, rtol=1e-5)


def test_layers_differ_and_default_to_the_last(tiny_hub: _TinyHub) -> None:
    first = load_speech_encoder(tiny_hub.whisper_card, layer=1)
    last = load_speech_encoder(tiny_hub.whisper_card)

    assert last.layer == 2

    inputs = first.prepare_input(_noisy_waveform(8_000, seed=0), 16_000)

    first_features, _ = _encode_alone(first, inputs)  # type: ignore[arg-type]
    last_features, _ = _encode_alone(last, inputs)  # type: ignore[arg-type]

    assert not torch.allclose(first_features, last_features, atol=1e-2)


def test_prepared_log_mel_equals_transformers(tiny_hub: _TinyHub) -> None:
    from transformers import WhisperFeatureExtractor

    encoder = load_speech_encoder(tiny_hub.whisper_card)

    feature_extractor = WhisperFeatureExtractor(feature_size=80)

    for seed, num_samples in enumerate(_NUM_SAMPLES):
        waveform = _noisy_waveform(num_samples, seed)

        log_mel = encoder.prepare_input(waveform, 16_000)

        # 100 Hz frames of the audio, plus two whose STFT windows reach its end.
        assert log_mel.shape == (math.ceil(num_samples / 160) + 2, 80)

        expected = feature_extractor(waveform.numpy(), sampling_rate=16_000, return_tensors="pt").input_features[0].T

        num_window_frames = min(log_mel.size(0), 3000)

        torch.testing.assert_close(log_mel[:num_window_frames], expected[:num_window_frames], atol=0.0, rtol=0.0)


@pytest.mark.parametrize("window", ["30s", "utterance"])
def test_padding_never_changes_real_features(tiny_hub: _TinyHub, window: WhisperWindow) -> None:
    encoder = load_speech_encoder(tiny_hub.whisper_card, layer=1, options=SpeechEncoderOptions(whisper_window=window))

    num_samples = [9_000, 160_000, 24_321]

    inputs = [encoder.prepare_input(_noisy_waveform(n, seed), 16_000) for seed, n in enumerate(num_samples)]

    with torch.no_grad():
        batched, batched_layout = encoder(*pad_seqs(inputs))

    assert batched_layout.seq_lens == [math.ceil(n / 320) for n in num_samples]
    assert batched.shape == (3, 500, 32)

    for row, row_inputs in enumerate(inputs):
        alone, _ = _encode_alone(encoder, row_inputs)  # type: ignore[arg-type]

        n = batched_layout.seq_lens[row]

        torch.testing.assert_close(batched[row, :n], alone[0], atol=1e-5, rtol=1e-5)

        assert torch.count_nonzero(batched[row, n:]) == 0


def test_utterance_window_equals_30s_window_on_a_full_window(tiny_hub: _TinyHub) -> None:
    waveform = _noisy_waveform(480_000, seed=7)

    features = {}

    for window in ("30s", "utterance"):
        encoder = load_speech_encoder(tiny_hub.whisper_card, options=SpeechEncoderOptions(whisper_window=window))  # type: ignore[arg-type]

        features[window], _ = _encode_alone(encoder, encoder.prepare_input(waveform, 16_000))  # type: ignore[arg-type]

    torch.testing.assert_close(features["utterance"], features["30s"], atol=1e-5, rtol=1e-5)

    # On a short utterance the two windows differ: the 30 s one also attends to padding.
    short = _noisy_waveform(16_000, seed=8)

    for window in ("30s", "utterance"):
        encoder = load_speech_encoder(tiny_hub.whisper_card, options=SpeechEncoderOptions(whisper_window=window))  # type: ignore[arg-type]

        features[window], _ = _encode_alone(encoder, encoder.prepare_input(short, 16_000))  # type: ignore[arg-type]

    assert features["utterance"].shape == features["30s"].shape == (1, 50, 32)
    assert not torch.allclose(features["utterance"], features["30s"], atol=1e-3)


def test_bad_layers_are_refused(tiny_hub: _TinyHub) -> None:
    for layer in (0, 3):
        with pytest.raises(ValueError, match="between 1 and 2"):
            load_speech_encoder(tiny_hub.whisper_card, layer=layer)


def test_bad_waveforms_are_refused(tiny_hub: _TinyHub) -> None:
    encoder = load_speech_encoder(tiny_hub.whisper_card)

    with pytest.raises(ValueError) as info:
        encoder.prepare_input(torch.zeros(480_001), 16_000)

    message = str(info.value)

    assert "\n" not in message
    assert "30 s" in message and "480001 samples" in message

    with pytest.raises(ValueError, match="empty"):
        encoder.prepare_input(torch.zeros(0), 16_000)

    with pytest.raises(ValueError, match="16 kHz"):
        encoder.prepare_input(torch.zeros(8_000), 8_000)

    with pytest.raises(ValueError, match="mono"):
        encoder.prepare_input(torch.zeros(8_000, 2), 16_000)


def test_non_whisper_hg_card_is_refused(tiny_hub: _TinyHub) -> None:
    with pytest.raises(TypeError, match="`tiny_bert_test` card holds a transformers BertModel"):
        load_speech_encoder(tiny_hub.bert_card)


def test_hub_environment_is_restored_after_loading(tiny_hub: _TinyHub) -> None:
    import huggingface_hub.constants as hub_constants
    import transformers.utils.hub as transformers_hub

    def snapshot() -> tuple[object, ...]:
        return (
            os.environ.get("HF_HUB_CACHE"),
            os.environ.get("HF_HUB_OFFLINE"),
            hub_constants.HF_HUB_CACHE,
            hub_constants.HF_HUB_OFFLINE,
            transformers_hub.TRANSFORMERS_CACHE,
            transformers_hub.is_offline_mode(),
        )

    before = snapshot()

    assert before[2] != str(tiny_hub.hub_cache_dir)

    load_speech_encoder(tiny_hub.whisper_card)

    assert snapshot() == before


# ---- slow: the converted demo Whisper tiny.en, loaded by name ---------------------


_COMPARE_DEMO_WHISPER = """
import json, math, sys
from pathlib import Path

import torch
from fairseq2.nn import BatchLayout
from fairseq2.nn.utils.padding import pad_seqs
from transformers import WhisperFeatureExtractor, WhisperModel

from fairseq2_speechmapper.demo.checks import read_wav
from fairseq2_speechmapper.speech_encoders import load_speech_encoder

snapshot_dir, *wav_files = sys.argv[1:]

encoder = load_speech_encoder("WHISPER_CARD")

feature_extractor = WhisperFeatureExtractor.from_pretrained(snapshot_dir)
model = WhisperModel.from_pretrained(snapshot_dir).eval()

waveforms = [torch.from_numpy(read_wav(Path(f))) for f in wav_files]
inputs = [encoder.prepare_input(w, 16_000) for w in waveforms]

result = {"type": type(encoder).__name__, "layer": encoder.layer, "seq_lens": [], "max_abs_diff": 0.0, "max_abs_batch_diff": 0.0}

with torch.no_grad():
    batched, batched_layout = encoder(*pad_seqs(inputs))

    for row, (waveform, row_inputs) in enumerate(zip(waveforms, inputs)):
        features, layout = encoder(row_inputs[None], BatchLayout.of(row_inputs[None]))
        n = layout.seq_lens[0]

        log_mel = feature_extractor(waveform.numpy(), sampling_rate=16_000, return_tensors="pt").input_features
        expected = model.encoder(log_mel).last_hidden_state[0, :n]

        result["seq_lens"].append([len(waveform), n, batched_layout.seq_lens[row]])
        result["max_abs_diff"] = max(result["max_abs_diff"], (features[0] - expected).abs().max().item())
        result["max_abs_batch_diff"] = max(result["max_abs_batch_diff"], (batched[row, :n] - features[0]).abs().max().item())
        result["feature_abs_mean"] = features.abs().mean().item()

print(json.dumps(result))
""".replace("WHISPER_CARD", WHISPER_CARD)


@pytest.mark.slow
def test_demo_whisper_loads_by_name_and_equals_transformers(demo_assets: DemoAssets) -> None:
    wav_files = []

    with demo_assets.dev_manifest.open(encoding="utf-8") as fp:
        for line in list(fp)[:3]:
            wav_files.append(str(demo_assets.corpus_dir / json.loads(line)["audio_filepath"]))

    # No HF_HUB_* variables: the card's `hf_hub_cache` field has to suffice.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}

    env[CACHE_DIR_ENV] = str(demo_assets.root_dir.parent)

    result = subprocess.run(
        [sys.executable, "-c", _COMPARE_DEMO_WHISPER, str(demo_assets.whisper_snapshot_dir), *wav_files],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-2000:]

    report = json.loads(result.stdout.splitlines()[-1])

    assert report["type"] == "WhisperSpeechEncoder" and report["layer"] == 4

    for num_samples, num_frames, batched_num_frames in report["seq_lens"]:
        assert num_frames == batched_num_frames == math.ceil(num_samples / 320)

    assert report["max_abs_diff"] < 1e-4
    assert report["max_abs_batch_diff"] < 1e-4
    assert 0.05 < report["feature_abs_mean"] < 10.0
