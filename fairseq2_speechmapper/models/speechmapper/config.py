from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from fairseq2.runtime.config_registry import ConfigRegistrar
from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.utils.validation import ValidationResult

SPEECHMAPPER_FAMILY: Final = "speechmapper"


@dataclass(kw_only=True)
class SpeechMapperBlockConfig:
    """Holds the configuration of one mapper block:
    ``Conv1d(kernel, stride)`` -> Transformer encoder layers -> up-projection."""

    model_dim: int
    """The width of the convolution output and of the Transformer layers."""

    output_dim: int
    """The width of the block's up-projection output."""

    conv_kernel_size: int = 6
    """The kernel size of the downsampling convolution, in frames."""

    conv_stride: int = 2
    """The stride of the downsampling convolution, in frames."""

    num_layers: int = 6
    """The number of Transformer encoder layers."""

    num_attn_heads: int = 16
    """The number of attention heads of the Transformer layers."""

    ffn_inner_dim: int = 2048
    """The inner width of the feed-forward networks (PyTorch's
    ``nn.TransformerEncoderLayer`` default, which reproduces the paper's ~277M)."""

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        for name in ("model_dim", "output_dim", "conv_kernel_size", "conv_stride", "num_attn_heads", "ffn_inner_dim"):
            if (value := getattr(self, name)) < 1:
                result.add_error(f"`{name}` must be at least 1, but is {value}.")

        if self.num_layers < 0:
            result.add_error(f"`num_layers` must not be negative, but is {self.num_layers}.")

        if self.num_attn_heads >= 1 and self.model_dim % self.num_attn_heads != 0:
            result.add_error(
                f"`model_dim` ({self.model_dim}) must be a multiple of `num_attn_heads` ({self.num_attn_heads})."
            )

        return result


def _paper_blocks() -> list[SpeechMapperBlockConfig]:
    return [
        SpeechMapperBlockConfig(model_dim=1024, output_dim=2048),
        SpeechMapperBlockConfig(model_dim=2048, output_dim=4096),
    ]


@dataclass(kw_only=True)
class LLMLoRAConfig:
    """Low-rank adapters on the frozen LLM's query and value projections,
    trained with the mapper in stage 2 and stored in its checkpoint (the paper
    keeps the LLM fully frozen: no adapters)."""

    rank: int = 8

    alpha: float = 16.0
    """The adapters' output is scaled by ``alpha / rank``."""

    dropout_p: float = 0.0
    """The dropout probability on the adapters' input."""

    num_layers: int = 0
    """The LLM's decoder layers; taken from the LLM when tuning starts."""

    model_dim: int = 0
    """The LLM's width; taken from the LLM when tuning starts."""

    q_dim: int = 0
    """The output width of the LLM's query projection."""

    v_dim: int = 0
    """The output width of the LLM's value projection (smaller with grouped-query attention)."""


@dataclass(kw_only=True)
class SpeechMapperConfig:
    """Holds the configuration of a SpeechMapper.

    The default values correspond to the mapper between w2v-BERT 2.0 (layer 24)
    and Llama 3.1 8B Instruct described in
    :cite:t:`https://arxiv.org/abs/2601.20417`.
    """

    input_dim: int = 1024
    """The width of the speech foundation model features."""

    frame_average: int = 2
    """The number of consecutive input frames averaged into one (1 = none)."""

    blocks: list[SpeechMapperBlockConfig] = field(default_factory=_paper_blocks)
    """The downsampling blocks, applied in order."""

    llm_dim: int = 4096
    """The width of the target LLM's input embeddings."""

    final_proj_hidden_dim: int | None = 4096
    """If not ``None``, the final projection is a two-layer MLP with this inner
    width; otherwise a single linear layer."""

    pos_encoder_type: Literal["sinusoidal", "none"] = "sinusoidal"
    """The position encoding added before each block's Transformer layers. The
    mapper must learn where content ends and padding starts, which needs
    absolute positions."""

    max_seq_len: int = 4096
    """The maximum sequence length a block's Transformer layers accept."""

    dropout_p: float = 0.1
    """The dropout probability in the Transformer layers and projections."""

    llm_lora: LLMLoRAConfig | None = None
    """Adapters on the LLM that the mapper carries (stage 2, optional)."""

    ctc_block: int | None = None
    """If not ``None``, the mapper carries an auxiliary CTC head on the output
    of this block (0-based) for stage 1's ``loss.ctc_weight``: it learns which
    LLM token each stretch of audio holds, in time order, before the last
    blocks learn to move the tokens to the front (not in the paper)."""

    fire_block: int | None = None
    """If not ``None``, the output of this block (0-based) is integrated and
    fired (continuous integrate-and-fire, not in the paper): one vector per
    token, in order, for the blocks after it, whose convolutions must then
    have kernel size and stride 1."""

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if not self.blocks:
            result.add_error("`blocks` must hold at least one block.")

        if self.ctc_block is not None and not 0 <= self.ctc_block < len(self.blocks):
            result.add_error(
                f"`ctc_block` must be the index of a block (0 to {len(self.blocks) - 1}) or null, but is {self.ctc_block}."
            )

        if self.fire_block is not None:
            if not 0 <= self.fire_block < len(self.blocks):
                result.add_error(
                    f"`fire_block` must be the index of a block (0 to {len(self.blocks) - 1}) or null, but is {self.fire_block}."
                )

            for idx, block in enumerate(self.blocks[self.fire_block + 1 :], start=self.fire_block + 1):
                if block.conv_kernel_size != 1 or block.conv_stride != 1:
                    result.add_error(
                        f"`blocks[{idx}]` comes after `fire_block` and works on one vector per token: its `conv_kernel_size` and `conv_stride` must be 1, but are {block.conv_kernel_size} and {block.conv_stride}."
                    )

        for name in ("input_dim", "frame_average", "llm_dim", "max_seq_len"):
            if (value := getattr(self, name)) < 1:
                result.add_error(f"`{name}` must be at least 1, but is {value}.")

        if self.final_proj_hidden_dim is not None and self.final_proj_hidden_dim < 1:
            result.add_error(
                f"`final_proj_hidden_dim` must be at least 1 or null, but is {self.final_proj_hidden_dim}."
            )

        if not 0.0 <= self.dropout_p < 1.0:
            result.add_error(f"`dropout_p` must be in [0, 1), but is {self.dropout_p}.")

        return result


def register_speechmapper_configs(container: DependencyContainer) -> None:
    arch = ConfigRegistrar(container, SpeechMapperConfig)

    @arch("paper_llama3_8b")
    def paper_llama3_8b() -> SpeechMapperConfig:
        return SpeechMapperConfig()

    @arch("paper_eurollm_9b")
    def paper_eurollm_9b() -> SpeechMapperConfig:
        # EuroLLM-9B embeds into 4096 dimensions as Llama 3.1 8B does.
        return SpeechMapperConfig()

    @arch("paper_qwen3_4b")
    def paper_qwen3_4b() -> SpeechMapperConfig:
        config = SpeechMapperConfig()

        config.llm_dim = 2560
        config.final_proj_hidden_dim = 2560

        return config

    @arch("small")
    def small() -> SpeechMapperConfig:
        # The paper's layout at CPU scale (~10M parameters), sized for the
        # demo: Whisper tiny.en features (384) into SmolLM2-135M (576).
        return SpeechMapperConfig(
            input_dim=384,
            blocks=[
                SpeechMapperBlockConfig(
                    model_dim=256, output_dim=512, num_layers=2, num_attn_heads=4, ffn_inner_dim=1024
                ),
                SpeechMapperBlockConfig(
                    model_dim=512, output_dim=512, num_layers=2, num_attn_heads=8, ffn_inner_dim=2048
                ),
            ],
            llm_dim=576,
            final_proj_hidden_dim=None,
        )

    @arch("small_ctc")
    def small_ctc() -> SpeechMapperConfig:
        # `small` with the auxiliary CTC head on its first block (12.5 Hz).
        config = small()

        config.ctc_block = 0

        return config

    @arch("small_cif")
    def small_cif() -> SpeechMapperConfig:
        # `small`'s first block (12.5 Hz), then integrate-and-fire to one
        # vector per token, which the second block contextualises in place.
        return fire_after_block(small(), 0)

    @arch("small_cif_ctc")
    def small_cif_ctc() -> SpeechMapperConfig:
        # `small_cif` with the auxiliary CTC head on its first block, before
        # it fires: the CTC term teaches which token each stretch holds.
        config = small_cif()

        config.ctc_block = 0

        return config

    @arch("slam_asr_small")
    def slam_asr_small() -> SpeechMapperConfig:
        # The connector of SLAM-ASR (Ma et al., 2024), trained end to end
        # through the frozen LLM: 5 stacked frames (a convolution whose kernel
        # is its stride is a linear map of the stacked frames, 10 Hz from
        # Whisper's 50 Hz) -> a 2-layer MLP; no Transformer layers.
        return SpeechMapperConfig(
            input_dim=384,
            frame_average=1,
            blocks=[
                SpeechMapperBlockConfig(
                    model_dim=1024, output_dim=1024, conv_kernel_size=5, conv_stride=5, num_layers=0
                ),
            ],
            llm_dim=576,
            final_proj_hidden_dim=None,
            pos_encoder_type="none",
        )

    @arch("tiny")
    def tiny() -> SpeechMapperConfig:
        return tiny_speechmapper_config()


def fire_after_block(config: SpeechMapperConfig, block: int) -> SpeechMapperConfig:
    """``config`` with integrate-and-fire after ``block``: the blocks after it
    work on one vector per token, so their convolutions keep the length."""
    for later_block in config.blocks[block + 1 :]:
        later_block.conv_kernel_size = 1
        later_block.conv_stride = 1

    config.fire_block = block

    return config


def tiny_speechmapper_config() -> SpeechMapperConfig:
    """Returns the ``tiny`` architecture: small enough for CPU tests and the
    install self-check; cards override its widths to match their SFM and LLM."""
    return SpeechMapperConfig(
        input_dim=64,
        blocks=[
            SpeechMapperBlockConfig(
                model_dim=model_dim,
                output_dim=128,
                conv_kernel_size=3,
                num_layers=2,
                num_attn_heads=4,
                ffn_inner_dim=2 * model_dim,
            )
            for model_dim in (64, 128)
        ],
        llm_dim=64,
        final_proj_hidden_dim=None,
        max_seq_len=2048,
        dropout_p=0.0,
    )
