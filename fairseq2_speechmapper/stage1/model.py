"""Assembles stage 1 from cards: the frozen SFM before the (trainable) mapper,
and the LLM's tokenizer and token-embedding table (never the LLM itself) with
the pad token, which define the targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import final

import torch
from torch import Tensor
from torch.nn import Module

from fairseq2.data.tokenizers import Tokenizer, load_tokenizer
from fairseq2.logging import log

from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.errors import SpeechMapperError
from fairseq2_speechmapper.features import FeatureCache, SpeechEncoderSection
from fairseq2_speechmapper.features.speech_encoder import SpeechEncoderFeatures, load_speech_encoder_features
from fairseq2_speechmapper.models.speechmapper import SpeechMapper
from fairseq2_speechmapper.stage1.config import TargetLLMSection
from fairseq2_speechmapper.stage1.embedding_table import load_embedding_table
from fairseq2_speechmapper.stage1.firing import fire_count_targets
from fairseq2_speechmapper.stage1.pad_token import decode_token, resolve_pad_idx
from fairseq2_speechmapper.stage1.targets import EmbeddingTargets, build_embedding_targets


class Stage1SetupError(SpeechMapperError):
    """The mapper, the SFM and the LLM do not fit together."""


@final
class Stage1Model:
    """The frozen SFM followed by the (trainable) mapper."""

    def __init__(self, speech_encoder: SpeechEncoderFeatures, mapper: Module) -> None:
        self.speech_encoder = speech_encoder
        self.mapper = mapper

    def __call__(self, batch: SpeechBatch) -> tuple[Tensor, list[int]]:
        """Returns the mapper's outputs *Shape:* :math:`(N,T,M)` and their lengths."""
        features, features_layout = self.speech_encoder(batch)

        # A mapper that integrates and fires is told, in training only, how
        # many outputs each transcript asks for (others ignore it).
        target_counts = fire_count_targets(batch.target_ids) if self.mapper.training else None

        outputs, outputs_layout = self.mapper(features.float(), features_layout, target_counts=target_counts)

        return outputs, [int(n) for n in outputs_layout.seq_lens]


@final
@dataclass(frozen=True)
class TargetEmbeddings:
    """The LLM's token-embedding table and the pad token: what the mapper's
    outputs are regressed onto."""

    embedding_table: Tensor

    pad_idx: int

    def __call__(self, target_ids: Sequence[Tensor], output_lens: Sequence[int]) -> EmbeddingTargets:
        return build_embedding_targets(target_ids, output_lens, self.embedding_table, self.pad_idx)


def load_stage1_model(
    speech_encoder_section: SpeechEncoderSection,
    llm_section: TargetLLMSection,
    *,
    mapper: Module,
    unwrapped_mapper: SpeechMapper,
    device: torch.device,
    feature_cache: FeatureCache | None = None,
    cache_in_memory: bool = False,
    pad_idx: int | None = None,
) -> tuple[Stage1Model, TargetEmbeddings, Tokenizer]:
    """Loads the frozen SFM, the LLM's tokenizer and embedding table, and
    checks that the mapper fits both (``unwrapped_mapper``: the mapper without
    its DDP/FSDP wrapper). With ``feature_cache`` the SFM is not loaded: the
    cache must hold the features ``speech_encoder_section`` asks for.
    ``pad_idx`` (a mapper card's) wins over ``llm_section.pad_token``."""
    features = load_speech_encoder_features(
        speech_encoder_section,
        device=device,
        cache_in_memory=cache_in_memory,
        feature_cache=feature_cache,
        mapper_frame_average=unwrapped_mapper.frame_average,
    )

    tokenizer = load_tokenizer(llm_section.name)

    embedding_table = load_embedding_table(llm_section.name, device=device, dtype=torch.float32)

    if pad_idx is None:
        pad_idx = resolve_pad_idx(tokenizer, llm_section.pad_token, llm_name=llm_section.name)

    check_mapper_fits(
        unwrapped_mapper,
        speech_encoder_dim=features.output_dim,
        llm_dim=embedding_table.size(1),
        speech_encoder_name=speech_encoder_section.name,
        llm_name=llm_section.name,
    )

    log.info(
        "Targets: the `{}` embedding table ({} x {}), pad token {!r} (id {}); the LLM itself is not loaded.",
        llm_section.name,
        embedding_table.size(0),
        embedding_table.size(1),
        decode_token(tokenizer, pad_idx),
        pad_idx,
    )

    return Stage1Model(features, mapper), TargetEmbeddings(embedding_table, pad_idx), tokenizer


def check_mapper_fits(
    mapper: SpeechMapper, *, speech_encoder_dim: int, llm_dim: int, speech_encoder_name: str, llm_name: str
) -> None:
    if mapper.input_dim != speech_encoder_dim:
        raise Stage1SetupError(
            f"The mapper reads {mapper.input_dim}-dimensional features, but `{speech_encoder_name}` outputs {speech_encoder_dim}; set `model.config_overrides.input_dim={speech_encoder_dim}`."
        )

    if mapper.llm_dim != llm_dim:
        raise Stage1SetupError(
            f"The mapper outputs {mapper.llm_dim}-dimensional vectors, but `{llm_name}` embeds into {llm_dim}; set `model.config_overrides.llm_dim={llm_dim}`."
        )
