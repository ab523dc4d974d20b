from __future__ import annotations

from typing import final

from typing_extensions import override

from fairseq2.models.conformer import ConformerConvolution
from fairseq2.models.transformer import (
    IdentityBias,
    MultiheadAttention,
    RelativePositionalEncoding,
    ShawRelativePositionSDPA,
    StandardMultiheadAttention,
    StandardTransformerEncoder,
    TransformerNormOrder,
)
from fairseq2.models.wav2vec2 import Wav2Vec2EncoderConfig, Wav2Vec2EncoderFactory
from fairseq2.nn.projection import init_bert_projection
from fairseq2.runtime.lazy import Lazy

from fairseq2_speechmapper.models.w2vbert2.config import W2VBert2Config
from fairseq2_speechmapper.models.w2vbert2.model import W2VBert2Model


def create_w2vbert2_model(config: W2VBert2Config) -> W2VBert2Model:
    return W2VBert2Factory(config).create_model()


class W2VBert2Factory:
    def __init__(self, config: W2VBert2Config) -> None:
        self._config = config

    def create_model(self) -> W2VBert2Model:
        config = self._config

        encoder_factory = W2VBert2EncoderFactory(to_wav2vec2_encoder_config(config), config)

        encoder_frontend = encoder_factory.create_encoder_frontend()

        encoder = encoder_factory.create_encoder()

        if not isinstance(encoder, StandardTransformerEncoder):
            raise TypeError(
                f"The conformer encoder must be a `{StandardTransformerEncoder}`, but is a `{type(encoder)}` instead."
            )

        return W2VBert2Model(
            encoder_frontend,
            encoder,
            num_fbank_channels=config.num_fbank_channels,
            model_dim=config.model_dim,
        )


def to_wav2vec2_encoder_config(config: W2VBert2Config) -> Wav2Vec2EncoderConfig:
    """Returns the wav2vec 2.0 encoder configuration whose factory builds the
    w2v-BERT 2.0 frontend and conformer layers (with the overrides of
    :class:`W2VBert2EncoderFactory`)."""
    return Wav2Vec2EncoderConfig(
        model_dim=config.model_dim,
        feature_dim=config.feature_dim,
        use_fbank=True,
        num_fbank_channels=config.num_fbank_channels,
        fbank_stride=config.fbank_stride,
        sample_fbank_every_k=1,
        first_pass_dropout_p=0.0,
        # The checkpoint normalises the stacked features (160-dim) before the
        # projection, never the projected ones.
        layer_norm_features=False,
        # Any value but "conv" disables the convolutional position encoder;
        # positions enter through the Shaw attention only.
        pos_encoder_type="shaw_relative",
        use_conformer=True,
        num_encoder_layers=config.num_encoder_layers,
        num_encoder_attn_heads=config.num_encoder_attn_heads,
        ffn_inner_dim=config.ffn_inner_dim,
        dropout_p=config.dropout_p,
        attn_dropout_p=0.0,
        ffn_inner_dropout_p=config.ffn_inner_dropout_p,
        layer_drop_p=0.0,
        norm_order=TransformerNormOrder.POST,
        depthwise_conv_kernel_size=config.depthwise_conv_kernel_size,
    )


@final
class W2VBert2EncoderFactory(Wav2Vec2EncoderFactory):
    """Builds wav2vec 2.0 conformer layers as w2v-BERT 2.0 has them: Shaw
    relative position keys in attention and a causal depthwise convolution
    followed by a layer norm (not a batch norm)."""

    def __init__(self, encoder_config: Wav2Vec2EncoderConfig, config: W2VBert2Config) -> None:
        super().__init__(encoder_config)

        self._w2vbert2_config = config

    @override
    def create_self_attention(self, lazy_rel_pos_encoding: Lazy[RelativePositionalEncoding]) -> MultiheadAttention:
        config = self._w2vbert2_config

        sdpa = ShawRelativePositionSDPA(
            config.model_dim,
            config.num_encoder_attn_heads,
            IdentityBias(),
            config.max_left_rel_pos,
            max_rhs_rel_pos=config.max_right_rel_pos,
            use_rel_pos_values=False,
        )

        return StandardMultiheadAttention(
            config.model_dim,
            config.num_encoder_attn_heads,
            sdpa,
            bias=True,
            qkv_proj_init_fn=init_bert_projection,
            output_proj_init_fn=init_bert_projection,
        )

    @override
    def create_conformer_conv(self) -> ConformerConvolution:
        config = self._w2vbert2_config

        return ConformerConvolution(
            config.model_dim,
            config.depthwise_conv_kernel_size,
            causal_depthwise_conv=True,
            norm_type="layer_norm",
        )
