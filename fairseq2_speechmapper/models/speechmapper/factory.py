from __future__ import annotations

from torch.nn import GELU, Conv1d, Dropout, Module

from fairseq2.models.transformer import (
    FeedForwardNetwork,
    IdentityBias,
    MultiheadAttention,
    StandardFeedForwardNetwork,
    StandardMultiheadAttention,
    StandardTransformerEncoder,
    StandardTransformerEncoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    TransformerNormOrder,
    create_default_sdpa,
)
from fairseq2.nn import (
    LayerNorm,
    Linear,
    PositionEncoder,
    SinusoidalPositionEncoder,
    StandardLayerNorm,
)

from fairseq2_speechmapper.models.speechmapper.config import (
    SpeechMapperBlockConfig,
    SpeechMapperConfig,
)
from fairseq2_speechmapper.models.speechmapper.lora import LLMLoRA
from fairseq2_speechmapper.models.speechmapper.model import (
    SpeechMapper,
    SpeechMapperBlock,
    SpeechMapperCTCHead,
    SpeechMapperFinalProjection,
    SpeechMapperIntegrateAndFire,
)


def create_speechmapper_model(config: SpeechMapperConfig) -> SpeechMapper:
    return SpeechMapperFactory(config).create_model()


class SpeechMapperFactory:
    def __init__(self, config: SpeechMapperConfig) -> None:
        if not config.blocks:
            raise ValueError("`config.blocks` must contain at least one block.")

        self._config = config

    def create_model(self) -> SpeechMapper:
        config = self._config

        blocks = []

        input_dim = config.input_dim

        for block_config in config.blocks:
            blocks.append(self.create_block(block_config, input_dim))

            input_dim = block_config.output_dim

        final_proj = self.create_final_projection(input_dim)

        ctc_head = None

        if config.ctc_block is not None:
            ctc_input_dim = config.blocks[config.ctc_block].output_dim

            ctc_head = SpeechMapperCTCHead(Linear(ctc_input_dim, config.llm_dim, bias=True))

        integrate_fire = None

        if config.fire_block is not None:
            fire_input_dim = config.blocks[config.fire_block].output_dim

            integrate_fire = SpeechMapperIntegrateAndFire(Linear(fire_input_dim, 1, bias=True))

        return SpeechMapper(
            config.frame_average,
            blocks,
            final_proj,
            input_dim=config.input_dim,
            llm_dim=config.llm_dim,
            llm_lora=None if config.llm_lora is None else LLMLoRA(config.llm_lora),
            ctc_head=ctc_head,
            ctc_block=config.ctc_block,
            integrate_fire=integrate_fire,
            fire_block=config.fire_block,
        )

    def create_block(self, block_config: SpeechMapperBlockConfig, input_dim: int) -> SpeechMapperBlock:
        conv = Conv1d(
            input_dim,
            block_config.model_dim,
            kernel_size=block_config.conv_kernel_size,
            stride=block_config.conv_stride,
        )

        pos_encoder = self.create_position_encoder(block_config)

        encoder = self.create_encoder(block_config)

        up_proj = Linear(block_config.model_dim, block_config.output_dim, bias=True)

        return SpeechMapperBlock(conv, GELU(), pos_encoder, encoder, up_proj)

    def create_position_encoder(self, block_config: SpeechMapperBlockConfig) -> PositionEncoder | None:
        config = self._config

        if config.pos_encoder_type == "none":
            return None

        if config.pos_encoder_type == "sinusoidal":
            return SinusoidalPositionEncoder(block_config.model_dim, config.max_seq_len)

        raise ValueError(
            f"`pos_encoder_type` must be 'sinusoidal' or 'none', but is '{config.pos_encoder_type}' instead."
        )

    def create_encoder(self, block_config: SpeechMapperBlockConfig) -> TransformerEncoder:
        layers = [self.create_encoder_layer(block_config) for _ in range(block_config.num_layers)]

        # Pre-norm layers leave their output unnormalised; close the stack.
        layer_norm = self.create_layer_norm(block_config.model_dim)

        return StandardTransformerEncoder(layers, layer_norm)

    def create_encoder_layer(self, block_config: SpeechMapperBlockConfig) -> TransformerEncoderLayer:
        config = self._config

        self_attn = self.create_self_attention(block_config)

        ffn = self.create_ffn(block_config)

        return StandardTransformerEncoderLayer(
            self_attn,
            self.create_layer_norm(block_config.model_dim),
            ffn,
            self.create_layer_norm(block_config.model_dim),
            norm_order=TransformerNormOrder.PRE,
            dropout_p=config.dropout_p,
        )

    def create_self_attention(self, block_config: SpeechMapperBlockConfig) -> MultiheadAttention:
        sdpa = create_default_sdpa(IdentityBias(), dropout_p=self._config.dropout_p)

        return StandardMultiheadAttention(block_config.model_dim, block_config.num_attn_heads, sdpa, bias=True)

    def create_ffn(self, block_config: SpeechMapperBlockConfig) -> FeedForwardNetwork:
        return StandardFeedForwardNetwork(
            block_config.model_dim,
            block_config.ffn_inner_dim,
            bias=True,
            inner_activation=GELU(),
            inner_dropout_p=self._config.dropout_p,
        )

    def create_final_projection(self, input_dim: int) -> SpeechMapperFinalProjection:
        config = self._config

        if config.final_proj_hidden_dim is None:
            return SpeechMapperFinalProjection(Linear(input_dim, config.llm_dim, bias=True))

        activation: Module = GELU()

        dropout = Dropout(config.dropout_p) if config.dropout_p > 0.0 else None

        return SpeechMapperFinalProjection(
            Linear(input_dim, config.final_proj_hidden_dim, bias=True),
            activation,
            Linear(config.final_proj_hidden_dim, config.llm_dim, bias=True),
            dropout,
        )

    @staticmethod
    def create_layer_norm(model_dim: int) -> LayerNorm:
        return StandardLayerNorm(model_dim, bias=True)
