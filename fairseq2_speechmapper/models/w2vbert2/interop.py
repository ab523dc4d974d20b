from __future__ import annotations

from typing import Final, cast

from fairseq2.models.utils.checkpoint import convert_state_dict

from fairseq2_speechmapper.models.w2vbert2.config import W2VBert2Config

# transformers' `Wav2Vec2BertModel` names (as in `model.safetensors` of
# facebook/w2v-bert-2.0) -> ours. Anchored on names only transformers uses, so
# that our own names pass through unchanged.
# fmt: off
_HF_KEY_MAP: Final = {
    r"^feature_projection\.layer_norm\.":                         r"encoder_frontend.post_extract_layer_norm.",
    r"^feature_projection\.projection\.":                         r"encoder_frontend.model_dim_proj.",
    r"^encoder\.layers\.([0-9]+)\.ffn(1|2)\.intermediate_dense\.": r"encoder.layers.\1.ffn\2.inner_proj.",
    r"^encoder\.layers\.([0-9]+)\.ffn(1|2)\.output_dense\.":       r"encoder.layers.\1.ffn\2.output_proj.",
    r"^encoder\.layers\.([0-9]+)\.self_attn\.linear_q\.":          r"encoder.layers.\1.self_attn.q_proj.",
    r"^encoder\.layers\.([0-9]+)\.self_attn\.linear_k\.":          r"encoder.layers.\1.self_attn.k_proj.",
    r"^encoder\.layers\.([0-9]+)\.self_attn\.linear_v\.":          r"encoder.layers.\1.self_attn.v_proj.",
    r"^encoder\.layers\.([0-9]+)\.self_attn\.linear_out\.":        r"encoder.layers.\1.self_attn.output_proj.",
    r"^encoder\.layers\.([0-9]+)\.self_attn\.distance_embedding\.": r"encoder.layers.\1.self_attn.sdpa.rel_k_embed.",
    # The conformer convolution's input norm sits inside transformers' module
    # and beside fairseq2's; its norm after the depthwise conv is inside both.
    r"^encoder\.layers\.([0-9]+)\.conv_module\.layer_norm\.":      r"encoder.layers.\1.conv_layer_norm.",
    r"^encoder\.layers\.([0-9]+)\.conv_module\.depthwise_layer_norm\.": r"encoder.layers.\1.conv.layer_norm.",
    r"^encoder\.layers\.([0-9]+)\.conv_module\.":                  r"encoder.layers.\1.conv.",
    r"^encoder\.layers\.([0-9]+)\.final_layer_norm\.":             r"encoder.layers.\1.layer_norm.",
}
# fmt: on

# Training-only state of transformers' model: the SpecAugment mask vector.
_HF_DROPPED_KEYS: Final = frozenset({"masked_spec_embed"})

# Prefixes of wrapped checkpoints: DDP and transformers' task models
# (`Wav2Vec2BertForCTC.wav2vec2_bert`).
_WRAPPER_PREFIXES: Final = ("module.", "wav2vec2_bert.")


def convert_w2vbert2_state_dict(state_dict: dict[str, object], config: W2VBert2Config) -> dict[str, object]:
    """Converts a w2v-BERT 2.0 state dict with transformers'
    ``Wav2Vec2BertModel`` key names to :class:`W2VBert2Model` key names.

    Our own key names are returned unchanged; ``{"model": state_dict}`` is
    unwrapped. Keys of other modules (an adapter, a CTC head) are kept, so that
    strict loading reports them rather than silently dropping weights.
    """
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = cast(dict[str, object], state_dict["model"])

    unwrapped = {}

    for key, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]

        if key not in _HF_DROPPED_KEYS:
            unwrapped[key] = value

    return convert_state_dict(unwrapped, _HF_KEY_MAP)
