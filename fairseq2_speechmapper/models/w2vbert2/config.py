from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fairseq2.runtime.config_registry import ConfigRegistrar
from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.utils.validation import ValidationResult

W2VBERT2_FAMILY: Final = "w2vbert2"


@dataclass(kw_only=True)
class W2VBert2Config:
    """Holds the configuration of a w2v-BERT 2.0 speech encoder (the encoder of
    SeamlessM4T v2, without its pretraining heads).

    The default values correspond to the 600M model released as
    ``facebook/w2v-bert-2.0`` (transformers' ``Wav2Vec2BertConfig`` defaults),
    described in Section 3.2.1 of :cite:t:`https://arxiv.org/abs/2312.05187`.
    """

    model_dim: int = 1024
    """The width of the conformer layers."""

    num_fbank_channels: int = 80
    """The number of log-mel filterbank channels of the input."""

    fbank_stride: int = 2
    """The number of consecutive fbank frames stacked into one feature vector
    (100 Hz fbanks -> 50 Hz encoder frames)."""

    num_encoder_layers: int = 24
    """The number of conformer layers."""

    num_encoder_attn_heads: int = 16
    """The number of attention heads of the conformer layers."""

    ffn_inner_dim: int = 4096
    """The inner width of the two macaron feed-forward networks of a layer."""

    depthwise_conv_kernel_size: int = 31
    """The kernel size of the causal depthwise convolution of a layer."""

    max_left_rel_pos: int = 64
    """The left clipping distance of the Shaw relative position keys."""

    max_right_rel_pos: int = 8
    """The right clipping distance of the Shaw relative position keys."""

    dropout_p: float = 0.0
    """The dropout probability on the outputs of the layers' sub-blocks. The
    encoder is used frozen here, so the default is no dropout."""

    ffn_inner_dropout_p: float = 0.0
    """The dropout probability on the inner activations of the feed-forward
    networks."""

    @property
    def feature_dim(self) -> int:
        """The width of a stacked feature vector (160 for the 600M model)."""
        return self.num_fbank_channels * self.fbank_stride

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if self.model_dim % self.num_encoder_attn_heads != 0:
            result.add_error(
                f"`model_dim` must be a multiple of `num_encoder_attn_heads` ({self.num_encoder_attn_heads}), but is {self.model_dim} instead."
            )

        for name in ("num_fbank_channels", "fbank_stride", "num_encoder_layers"):
            if getattr(self, name) < 1:
                result.add_error(f"`{name}` must be at least 1.")

        if self.max_left_rel_pos < 0 or self.max_right_rel_pos < 0:
            result.add_error("`max_left_rel_pos` and `max_right_rel_pos` must be non-negative.")

        return result


def register_w2vbert2_configs(container: DependencyContainer) -> None:
    arch = ConfigRegistrar(container, W2VBert2Config)

    @arch("600m")
    def w2vbert2_600m() -> W2VBert2Config:
        return W2VBert2Config()

    @arch("tiny")
    def tiny() -> W2VBert2Config:
        return tiny_w2vbert2_config()


def tiny_w2vbert2_config() -> W2VBert2Config:
    """Returns the ``tiny`` architecture: random-weight CPU tests and fixtures.
    It keeps the real fbank input and the real relative position clipping."""
    return W2VBert2Config(
        model_dim=64,
        num_encoder_layers=3,
        num_encoder_attn_heads=4,
        ffn_inner_dim=128,
        depthwise_conv_kernel_size=5,
    )
