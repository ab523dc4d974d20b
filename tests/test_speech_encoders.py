from __future__ import annotations

import pytest
import torch

from fairseq2.nn import BatchLayout
from fairseq2.nn.utils.padding import pad_seqs

from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD, TINY_SPEECH_ENCODER_CARD
from fairseq2_speechmapper.models.w2vbert2 import (
    get_w2vbert2_model_hub,
    tiny_w2vbert2_config,
)
from fairseq2_speechmapper.speech_encoders import (
    SpeechEncoderNotSupportedError,
    W2VBert2SpeechEncoder,
    Wav2Vec2SpeechEncoder,
    load_speech_encoder,
)


def _noisy_waveform(num_samples: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)

    return 0.3 * torch.randn(num_samples, generator=generator)


@pytest.mark.parametrize("normalize_waveform", [False, True])
def test_wav2vec2_padding_never_changes_real_features(normalize_waveform: bool) -> None:
    encoder = load_speech_encoder(TINY_SPEECH_ENCODER_CARD, layer=1)

    assert isinstance(encoder, Wav2Vec2SpeechEncoder)
    assert not encoder.training
    assert all(not p.requires_grad for p in encoder.parameters())

    encoder.normalize_waveform = normalize_waveform

    short = encoder.prepare_input(_noisy_waveform(9_000, seed=0), 16_000)
    long = encoder.prepare_input(_noisy_waveform(24_000, seed=1), 16_000)

    with torch.no_grad():
        alone, alone_layout = encoder(short.unsqueeze(0), BatchLayout.of(short.unsqueeze(0)))

        inputs, inputs_layout = pad_seqs([short, long])

        batched, batched_layout = encoder(inputs, inputs_layout)

    # 320 samples per frame (20 ms).
    assert batched_layout.seq_lens == [9_000 // 320 - 1, 24_000 // 320 - 1]
    assert alone_layout.seq_lens[0] == batched_layout.seq_lens[0]
    assert batched.size(-1) == encoder.output_dim

    n = alone_layout.seq_lens[0]

    torch.testing.assert_close(batched[0, :n], alone[0], atol=1e-5, rtol=1e-4)

    assert torch.count_nonzero(batched[0, n:]) == 0


def test_feature_layer_is_checked() -> None:
    encoder = load_speech_encoder(TINY_SPEECH_ENCODER_CARD, layer=3)

    inputs = encoder.prepare_input(_noisy_waveform(8_000, seed=0), 16_000).unsqueeze(0)

    with pytest.raises(ValueError, match="between 1 and 2"):
        encoder(inputs, BatchLayout.of(inputs))


def test_layer_selects_intermediate_features() -> None:
    first = load_speech_encoder(TINY_SPEECH_ENCODER_CARD, layer=1)
    last = load_speech_encoder(TINY_SPEECH_ENCODER_CARD)

    assert last.layer == 2

    inputs = first.prepare_input(_noisy_waveform(8_000, seed=0), 16_000).unsqueeze(0)

    with torch.no_grad():
        first_features, _ = first(inputs, BatchLayout.of(inputs))
        last_features, _ = last(inputs, BatchLayout.of(inputs))

    assert not torch.allclose(first_features, last_features)


def test_bad_waveforms_are_refused() -> None:
    encoder = load_speech_encoder(TINY_SPEECH_ENCODER_CARD)

    with pytest.raises(ValueError, match="16 kHz"):
        encoder.prepare_input(torch.zeros(8_000), 8_000)

    with pytest.raises(ValueError, match="mono"):
        encoder.prepare_input(torch.zeros(8_000, 2), 16_000)


def test_non_speech_card_is_refused() -> None:
    with pytest.raises(SpeechEncoderNotSupportedError, match="llama"):
        load_speech_encoder(TINY_LLAMA_CARD)


def test_w2vbert2_padding_never_changes_real_features() -> None:
    hub = get_w2vbert2_model_hub()

    torch.manual_seed(0)

    model = hub.create_new_model(tiny_w2vbert2_config(), device=torch.device("cpu"))

    encoder = W2VBert2SpeechEncoder(model.eval(), layer=1)

    short = encoder.prepare_input(_noisy_waveform(9_000, seed=0), 16_000)
    long = encoder.prepare_input(_noisy_waveform(24_000, seed=1), 16_000)

    # 80-dim fbank at 100 Hz (25 ms windows, 10 ms hop).
    assert short.shape == (1 + (9_000 - 400) // 160, 80)

    with torch.no_grad():
        alone, alone_layout = encoder(short.unsqueeze(0), BatchLayout.of(short.unsqueeze(0)))

        inputs, inputs_layout = pad_seqs([short, long])

        batched, batched_layout = encoder(inputs, inputs_layout)

    n = alone_layout.seq_lens[0]

    # Two fbank frames are stacked into one 50 Hz frame.
    assert n == short.size(0) // 2
    assert batched_layout.seq_lens[0] == n

    torch.testing.assert_close(batched[0, :n], alone[0], atol=1e-5, rtol=1e-4)
