"""w2v-BERT 2.0 as a fairseq2 family: equivalence with transformers'
``Wav2Vec2BertModel`` (the reference implementation of the released
checkpoint) and with ``SeamlessM4TFeatureExtractor``, padding invariance, the
card and the checkpoint loading path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor
from transformers import (
    SeamlessM4TFeatureExtractor,
    Wav2Vec2BertConfig,
    Wav2Vec2BertModel,
)

from fairseq2.assets import get_asset_store
from fairseq2.model_checkpoint import CorruptModelCheckpointError
from fairseq2.nn import BatchLayout

from fairseq2_speechmapper.models.w2vbert2 import (
    W2VBERT2_FAMILY,
    W2VBert2Config,
    W2VBert2Model,
    compute_w2vbert2_fbank,
    convert_w2vbert2_state_dict,
    create_w2vbert2_fbank_converter,
    get_w2vbert2_model_hub,
    tiny_w2vbert2_config,
)

# Same operations in the same order as transformers, so fp32 agrees far below
# this (measured: 0.0 on CPU); the bound leaves room for other BLAS kernels.
LAYER_ATOL = 1e-4

# Two float32 fbank implementations (fairseq2n's Kaldi vs transformers' numpy
# spectrogram), compared after standardisation (unit variance per channel).
FBANK_ATOL = 1e-3

# 100 Hz fbank frames; 85 stacked frames exceed the left clipping distance (64)
# so that both clippings of the Shaw positions are exercised.
LONG_LEN = 170
SHORT_LEN = 101  # odd: the stacking drops a trailing frame


def tiny_hf_config() -> Wav2Vec2BertConfig:
    """The transformers configuration matching :func:`tiny_w2vbert2_config`."""
    config = tiny_w2vbert2_config()

    return Wav2Vec2BertConfig(
        hidden_size=config.model_dim,
        num_hidden_layers=config.num_encoder_layers,
        num_attention_heads=config.num_encoder_attn_heads,
        intermediate_size=config.ffn_inner_dim,
        feature_projection_input_dim=config.feature_dim,
        conv_depthwise_kernel_size=config.depthwise_conv_kernel_size,
        position_embeddings_type="relative_key",
        left_max_position_embeddings=config.max_left_rel_pos,
        right_max_position_embeddings=config.max_right_rel_pos,
        hidden_act="swish",
        layerdrop=0.0,
    )


@pytest.fixture(scope="module")
def hf_model() -> Wav2Vec2BertModel:
    torch.manual_seed(0)

    model = Wav2Vec2BertModel(tiny_hf_config()).eval()

    # transformers initialises norms to (1, 0) and biases to 0, which would hide
    # a swapped norm or bias in the key mapping; make every tensor distinct.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))

    return model


@pytest.fixture(scope="module")
def model(hf_model: Wav2Vec2BertModel) -> W2VBert2Model:
    config = tiny_w2vbert2_config()

    model = get_w2vbert2_model_hub().create_new_model(config, device=torch.device("cpu"))

    state_dict = convert_w2vbert2_state_dict(dict(hf_model.state_dict()), config)

    model.load_state_dict(state_dict, strict=True)

    return model.eval()


def stack_like_transformers(fbank: Tensor, seq_lens: list[int]) -> tuple[Tensor, Tensor]:
    """Stacks fbank frames in pairs and builds the attention mask as
    ``SeamlessM4TFeatureExtractor`` does (a pair holding padding is padding)."""
    batch_size, num_frames, num_channels = fbank.shape

    num_frames -= num_frames % 2

    feats = fbank[:, :num_frames].reshape(batch_size, num_frames // 2, 2 * num_channels)

    frame_mask = torch.zeros(batch_size, num_frames, dtype=torch.long)
    for idx, seq_len in enumerate(seq_lens):
        frame_mask[idx, :seq_len] = 1

    return feats, frame_mask[:, 1::2]


def hf_hidden_states(hf_model: Wav2Vec2BertModel, feats: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
    with torch.no_grad():
        output = hf_model(feats, attention_mask=attention_mask, output_hidden_states=True)

    hidden_states: tuple[Tensor, ...] = output.hidden_states

    return hidden_states


def layer_diffs(expected: tuple[Tensor, ...] | list[Tensor], actual: list[Tensor], mask: Tensor) -> list[float]:
    """Max abs difference per layer over the real (unpadded) positions."""
    assert len(expected) == len(actual)

    return [float((e[mask] - a[mask]).abs().max()) for e, a in zip(expected, actual, strict=True)]


def noisy_waveform(num_samples: int, seed: int) -> Tensor:
    """A tone plus noise in [-1, 1]; the noise keeps every fbank channel's
    variance non-zero (a pure tone gives NaN after standardisation)."""
    gen = torch.Generator().manual_seed(seed)

    time = torch.arange(num_samples) / 16_000

    tone = 0.4 * torch.sin(2 * torch.pi * (220 + 100 * seed) * time)

    return tone + 0.05 * torch.randn(num_samples, generator=gen)


# (a)
def test_every_layer_matches_transformers_on_a_padded_batch(hf_model: Wav2Vec2BertModel, model: W2VBert2Model) -> None:
    torch.manual_seed(1)

    seq_lens = [LONG_LEN, SHORT_LEN]

    fbank = torch.randn(2, LONG_LEN, 80)

    feats, attention_mask = stack_like_transformers(fbank, seq_lens)

    expected = hf_hidden_states(hf_model, feats, attention_mask)

    with torch.no_grad():
        actual, layout = model.layer_outputs(fbank, BatchLayout.of(fbank, seq_lens))

    assert layout.seq_lens == attention_mask.sum(dim=1).tolist() == [85, 50]

    mask = attention_mask.bool()

    diffs = layer_diffs(expected, actual, mask)

    print(f"max abs diff per layer (0 = encoder input): {diffs}")

    assert len(diffs) == model.num_layers + 1 == 4
    assert max(diffs) <= LAYER_ATOL

    for output in actual:
        assert output[~mask].eq(0.0).all()

    # Control: without the relative position keys the same comparison fails,
    # so the check above does see them.
    broken = copy.deepcopy(model)
    with torch.no_grad():
        for layer in broken.encoder.layers:
            layer.self_attn.sdpa.rel_k_embed.weight.zero_()  # type: ignore[union-attr]

        broken_actual, _ = broken.layer_outputs(fbank, BatchLayout.of(fbank, seq_lens))

    assert layer_diffs(expected, broken_actual, mask)[1] > 100 * LAYER_ATOL


def test_unpadded_batch_matches_transformers(hf_model: Wav2Vec2BertModel, model: W2VBert2Model) -> None:
    torch.manual_seed(2)

    fbank = torch.randn(2, LONG_LEN, 80)

    feats, attention_mask = stack_like_transformers(fbank, [LONG_LEN, LONG_LEN])

    # No mask at all on the transformers side: the unpadded code path.
    with torch.no_grad():
        expected = hf_model(feats, output_hidden_states=True).hidden_states

        actual, layout = model.layer_outputs(fbank, BatchLayout.of(fbank))

    assert not layout.padded

    assert max(layer_diffs(expected, actual, attention_mask.bool())) <= LAYER_ATOL


# (b)
def test_frontend_matches_seamless_feature_extractor() -> None:
    waveforms = [noisy_waveform(16_000, seed=0), noisy_waveform(11_680, seed=1)]

    hf_extractor = SeamlessM4TFeatureExtractor()

    hf_output = hf_extractor([w.numpy() for w in waveforms], sampling_rate=16_000, return_tensors="pt")

    # (N, S/2, 160) -> (N, S, 80)
    hf_fbank = hf_output["input_features"].reshape(len(waveforms), -1, 80)

    converter = create_w2vbert2_fbank_converter()

    diffs = []

    for idx, waveform in enumerate(waveforms):
        fbank = compute_w2vbert2_fbank(waveform, converter=converter)

        # 25 ms windows every 10 ms, no centring.
        assert fbank.shape == ((waveform.numel() - 400) // 160 + 1, 80)

        assert not fbank.isnan().any()

        num_frames = int(hf_output["attention_mask"][idx].sum()) * 2

        assert num_frames == fbank.size(0) - fbank.size(0) % 2

        diffs.append(float((hf_fbank[idx, :num_frames] - fbank[:num_frames]).abs().max()))

    print(f"max abs fbank diff per utterance: {diffs}")

    assert max(diffs) <= FBANK_ATOL

    # Control: fbanks one frame (10 ms) apart differ far beyond the bound, so
    # the check above would see a misaligned window.
    fbank = compute_w2vbert2_fbank(waveforms[0], converter=converter)

    assert float((hf_fbank[0, 1:98] - fbank[:97]).abs().max()) > 100 * FBANK_ATOL


def test_frontend_rejects_wrong_sample_rate_and_channels() -> None:
    waveform = noisy_waveform(8_000, seed=0)

    with pytest.raises(ValueError, match="sample_rate"):
        compute_w2vbert2_fbank(waveform, sample_rate=8_000)

    with pytest.raises(ValueError, match="mono"):
        compute_w2vbert2_fbank(waveform.unsqueeze(0))


def test_waveform_to_layer_outputs_matches_transformers_pipeline(
    hf_model: Wav2Vec2BertModel, model: W2VBert2Model
) -> None:
    # The whole path a recipe runs: waveforms -> fbank -> padded batch -> layers.
    waveforms = [noisy_waveform(19_040, seed=2), noisy_waveform(12_000, seed=3)]

    hf_output = SeamlessM4TFeatureExtractor()([w.numpy() for w in waveforms], sampling_rate=16_000, return_tensors="pt")

    expected = hf_hidden_states(hf_model, hf_output["input_features"], hf_output["attention_mask"])

    fbanks = [compute_w2vbert2_fbank(w) for w in waveforms]

    seq_lens = [f.size(0) for f in fbanks]

    batch = torch.zeros(2, max(seq_lens), 80)
    for idx, fbank in enumerate(fbanks):
        batch[idx, : fbank.size(0)] = fbank

    with torch.no_grad():
        actual, layout = model.layer_outputs(batch, BatchLayout.of(batch, seq_lens))

    mask = hf_output["attention_mask"].bool()

    assert layout.seq_lens == mask.sum(dim=1).tolist() == [58, 36]

    # transformers pads the odd 117 fbank frames to 118 and masks the pair
    # holding the pad; fairseq2 drops the odd frame. Same real frames.
    width = layout.width

    assert not mask[:, width:].any()

    diffs = layer_diffs([h[:, :width] for h in expected], actual, mask[:, :width])

    print(f"max abs diff per layer from waveforms: {diffs}")

    # The fbank differences (<= FBANK_ATOL) pass through the random layers.
    assert max(diffs) <= 1e-2


# (c)
def test_padding_never_changes_real_positions(model: W2VBert2Model) -> None:
    torch.manual_seed(3)

    short = torch.randn(1, SHORT_LEN, 80)
    long = torch.randn(1, LONG_LEN, 80)

    batch = torch.full((2, LONG_LEN, 80), float("nan"))  # whatever padding holds
    batch[0, :SHORT_LEN] = short[0]
    batch[1] = long[0]

    with torch.no_grad():
        alone, alone_layout = model.layer_outputs(short, BatchLayout.of(short))

        padded, padded_layout = model.layer_outputs(batch, BatchLayout.of(batch, [SHORT_LEN, LONG_LEN]))

        long_alone, _ = model.layer_outputs(long, BatchLayout.of(long))

    num_frames = alone_layout.seq_lens[0]

    assert padded_layout.seq_lens == [num_frames, LONG_LEN // 2]

    for idx, (a, p, la) in enumerate(zip(alone, padded, long_alone, strict=True)):
        torch.testing.assert_close(p[0, :num_frames], a[0], atol=1e-5, rtol=0, msg=f"layer {idx}")
        torch.testing.assert_close(p[1], la[0], atol=1e-5, rtol=0, msg=f"layer {idx}")

        assert p[0, num_frames:].eq(0.0).all()


def test_forward_returns_the_chosen_layer_and_stops_there(
    model: W2VBert2Model,
) -> None:
    torch.manual_seed(4)

    fbank = torch.randn(2, 64, 80)
    layout = BatchLayout.of(fbank, [64, 40])

    with torch.no_grad():
        all_outputs, _ = model.layer_outputs(fbank, layout)

    calls: list[int] = []

    handles = [
        layer.register_forward_hook(lambda m, i, o, idx=idx: calls.append(idx))
        for idx, layer in enumerate(model.encoder.layers)
    ]

    try:
        with torch.no_grad():
            for layer_nr in range(model.num_layers + 1):
                calls.clear()

                seqs, seqs_layout = model(fbank, layout, layer=layer_nr)

                assert calls == list(range(layer_nr))

                torch.testing.assert_close(seqs, all_outputs[layer_nr], atol=0, rtol=0)

                assert seqs_layout.seq_lens == [32, 20]

            calls.clear()

            last, _ = model(fbank, layout)

            assert calls == list(range(model.num_layers))

            torch.testing.assert_close(last, all_outputs[-1], atol=0, rtol=0)
    finally:
        for handle in handles:
            handle.remove()

    with pytest.raises(ValueError, match="`layer`"):
        model(fbank, layout, layer=model.num_layers + 1)

    with pytest.raises(ValueError, match="80-channel"):
        model(fbank[..., :40], layout)


# (d)
def test_card_resolves_to_the_600m_architecture() -> None:
    card = get_asset_store().retrieve_card("w2vbert2_600m")

    assert card.field("model_family").as_(str) == W2VBERT2_FAMILY
    assert card.field("model_arch").as_(str) == "600m"
    assert card.field("checkpoint").as_(str) == "hg://facebook/w2v-bert-2.0"

    hub = get_w2vbert2_model_hub()

    config = hub.get_model_config(card)

    assert config == hub.get_arch_config("600m") == W2VBert2Config()

    # The released model, per transformers' defaults (= facebook/w2v-bert-2.0).
    hf_config = Wav2Vec2BertConfig()

    assert config.model_dim == hf_config.hidden_size == 1024
    assert config.num_encoder_layers == hf_config.num_hidden_layers == 24
    assert config.num_encoder_attn_heads == hf_config.num_attention_heads == 16
    assert config.ffn_inner_dim == hf_config.intermediate_size == 4096
    assert config.feature_dim == hf_config.feature_projection_input_dim == 160
    assert config.depthwise_conv_kernel_size == hf_config.conv_depthwise_kernel_size == 31
    assert config.max_left_rel_pos == hf_config.left_max_position_embeddings == 64
    assert config.max_right_rel_pos == hf_config.right_max_position_embeddings == 8
    assert hf_config.position_embeddings_type == "relative_key"


def test_600m_model_has_the_released_parameter_count() -> None:
    hub = get_w2vbert2_model_hub()

    model = hub.create_new_model(hub.get_arch_config("600m"), device=torch.device("cpu"), meta=True)

    num_params = sum(p.numel() for p in model.parameters())

    print(f"w2vbert2 600m parameters: {num_params:,}")

    with torch.device("meta"):
        hf_model = Wav2Vec2BertModel(Wav2Vec2BertConfig())

    # All of transformers' model but the SpecAugment vector `masked_spec_embed`.
    hf_num_params = sum(p.numel() for n, p in hf_model.named_parameters() if n != "masked_spec_embed")

    assert num_params == hf_num_params
    assert 580_000_000 <= num_params <= 600_000_000


def test_converter_maps_transformers_keys_and_keeps_native_ones(
    hf_model: Wav2Vec2BertModel, model: W2VBert2Model
) -> None:
    config = tiny_w2vbert2_config()

    hf_state_dict = dict(hf_model.state_dict())

    assert "masked_spec_embed" in hf_state_dict  # dropped by the converter

    converted = convert_w2vbert2_state_dict(hf_state_dict, config)

    assert converted.keys() == model.state_dict().keys()

    # Same tensors under new names: a rename, not a copy or a transform.
    assert (
        converted["encoder.layers.1.self_attn.sdpa.rel_k_embed.weight"]
        is hf_state_dict["encoder.layers.1.self_attn.distance_embedding.weight"]
    )
    assert (
        converted["encoder.layers.2.conv.layer_norm.bias"]
        is hf_state_dict["encoder.layers.2.conv_module.depthwise_layer_norm.bias"]
    )
    assert (
        converted["encoder.layers.2.conv_layer_norm.bias"]
        is hf_state_dict["encoder.layers.2.conv_module.layer_norm.bias"]
    )

    native = dict(model.state_dict())

    for wrapped in (native, {"model": native}):
        assert convert_w2vbert2_state_dict(wrapped, config) == native

    # transformers' task models nest the encoder under `wav2vec2_bert.`.
    nested = {f"wav2vec2_bert.{k}": v for k, v in hf_state_dict.items()}

    assert convert_w2vbert2_state_dict(nested, config).keys() == native.keys()


# (e)
def test_hub_loads_a_transformers_safetensors_checkpoint(
    tmp_path: Path, hf_model: Wav2Vec2BertModel, model: W2VBert2Model
) -> None:
    # The layout of `model.safetensors` in facebook/w2v-bert-2.0.
    path = tmp_path / "model.safetensors"

    save_file({k: v.contiguous() for k, v in hf_model.state_dict().items()}, path)

    hub = get_w2vbert2_model_hub()

    loaded = hub.load_custom_model(path, tiny_w2vbert2_config(), device=torch.device("cpu")).eval()

    assert isinstance(loaded, W2VBert2Model)

    torch.manual_seed(5)

    seq_lens = [LONG_LEN, SHORT_LEN]

    fbank = torch.randn(2, LONG_LEN, 80)

    feats, attention_mask = stack_like_transformers(fbank, seq_lens)

    expected = hf_hidden_states(hf_model, feats, attention_mask)

    with torch.no_grad():
        actual, _ = loaded.layer_outputs(fbank, BatchLayout.of(fbank, seq_lens))

    assert max(layer_diffs(expected, actual, attention_mask.bool())) <= LAYER_ATOL

    # A mismatching architecture is refused by the strict load.
    wrong_config = tiny_w2vbert2_config()
    wrong_config.max_left_rel_pos = 32

    with pytest.raises(CorruptModelCheckpointError) as info:
        hub.load_custom_model(path, wrong_config, device=torch.device("cpu"))

    assert "rel_k_embed.weight` has a shape of (73, 16)" in str(info.value.__cause__)


def test_hub_loads_a_native_checkpoint(tmp_path: Path, model: W2VBert2Model) -> None:
    path = tmp_path / "model.pt"

    torch.save({"model": model.state_dict()}, path)

    loaded = get_w2vbert2_model_hub().load_custom_model(path, tiny_w2vbert2_config(), device=torch.device("cpu"))

    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
