"""Assembles a speech LLM from a trained mapper's card: the speech encoder and the LLM it
names (or another LLM with the same embeddings), frozen, around the mapper."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import Module

from fairseq2.assets import AssetCard
from fairseq2.data.tokenizers import Tokenizer, load_tokenizer
from fairseq2.data_type import DataType
from fairseq2.logging import log
from fairseq2.models import load_model
from fairseq2.models.transformer_lm import TransformerLM

from fairseq2_speechmapper.asset_store.mapper_card import MapperCard
from fairseq2_speechmapper.errors import SpeechMapperError
from fairseq2_speechmapper.features import FeatureCache, load_speech_encoder_features
from fairseq2_speechmapper.models.speechmapper import LLMLoRA, LLMLoRAConfig, LLMLoRAError, SpeechMapper
from fairseq2_speechmapper.speech_llm.chat import ChatTemplate
from fairseq2_speechmapper.speech_llm.model import SpeechLLM
from fairseq2_speechmapper.stage1.embedding_table import EmbeddingTableError, load_embedding_table


class SpeechLLMSetupError(SpeechMapperError):
    """The mapper, the speech encoder and the LLM do not fit together."""


@dataclass(kw_only=True)
class SpeechLLMSection:
    """How the mapper is attached to its LLM."""

    llm: str | None = None
    """The LLM's card; by default the one the mapper's card names."""

    llm_dtype: DataType = torch.float32
    """The frozen LLM's data type (``bfloat16`` on GPUs)."""

    speech_encoder_dtype: DataType = torch.float32

    cache_features_in_memory: bool = False
    """Keep each utterance's speech encoder features in memory after the first epoch."""

    chat_template: str | None = None
    """A Jinja chat template replacing the LLM tokenizer's own."""

    system_prompt: str | None = None
    """A system message before every prompt; by default none."""

    allow_other_llm: bool = False
    """Attach the mapper to an LLM other than the one it was trained for even
    when their embedding tables cannot be compared."""


def load_speech_llm(
    mapper_card: AssetCard,
    section: SpeechLLMSection,
    *,
    mapper: Module,
    unwrapped_mapper: SpeechMapper,
    device: torch.device,
    feature_cache: FeatureCache | None = None,
) -> tuple[SpeechLLM, Tokenizer, MapperCard]:
    """Loads the speech encoder and the LLM of ``mapper_card``, frozen and in eval mode,
    and checks that ``unwrapped_mapper`` fits between them. With
    ``feature_cache`` the speech encoder is not loaded: the cache must hold the features
    of the speech encoder, layer and options the card names.

    An instruction-tuned mapper's card records its prompt format; ``section``'s
    own ``chat_template``/``system_prompt`` win over it.
    """
    info = MapperCard.read(mapper_card)

    llm_name = section.llm or info.llm

    features = load_speech_encoder_features(
        info.speech_encoder_section(section.speech_encoder_dtype),
        device=device,
        cache_in_memory=section.cache_features_in_memory,
        feature_cache=feature_cache,
        mapper_frame_average=unwrapped_mapper.frame_average,
        asked_by=f"the mapper `{info.name}`",
        setting=_mapper_card_setting,
    )

    if unwrapped_mapper.input_dim != features.output_dim:
        raise SpeechLLMSetupError(
            f"The mapper `{info.name}` reads {unwrapped_mapper.input_dim}-dimensional features, but its speech encoder `{info.speech_encoder}` outputs {features.output_dim}."
        )

    llm = load_model(llm_name, device=device, dtype=section.llm_dtype)
    if not isinstance(llm, TransformerLM):
        raise SpeechLLMSetupError(
            f"The `{llm_name}` card does not hold a decoder-only LLM (a fairseq2 `TransformerLM`)."
        )

    llm.requires_grad_(False)

    # Also what turns the KV cache on (it is ignored in training mode).
    llm.eval()

    model_dim = llm.decoder_frontend.embed.weight.size(1)
    if unwrapped_mapper.llm_dim != model_dim:
        raise SpeechLLMSetupError(
            f"The mapper `{info.name}` outputs {unwrapped_mapper.llm_dim}-dimensional vectors for `{info.llm}`, but `{llm_name}` embeds into {model_dim}: pretrain a mapper for `{llm_name}`."
        )

    if llm_name != info.llm:
        _check_same_embeddings(info, llm, llm_name, allow_other_llm=section.allow_other_llm)

    if unwrapped_mapper.llm_lora is not None:
        try:
            unwrapped_mapper.llm_lora.attach(llm)
        except LLMLoRAError as ex:
            raise SpeechLLMSetupError(f"`{info.name}`: {ex}") from None

        log.info(
            "The mapper's LoRA adapters (rank {}) are attached to `{}`.",
            unwrapped_mapper.llm_lora.config.rank,
            llm_name,
        )

    tokenizer = load_tokenizer(llm_name)

    chat_template = ChatTemplate(
        tokenizer,
        llm_name=llm_name,
        template=section.chat_template or _optional_str(info.extra_fields.get("chat_template")),
        system_prompt=section.system_prompt or _optional_str(info.extra_fields.get("system_prompt")),
    )

    log.info(
        "Speech LLM: `{}` (layer {}{}) -> mapper `{}` -> `{}` (frozen, {}).",
        info.speech_encoder,
        features.layer,
        ", cached features" if feature_cache is not None else "",
        info.name,
        llm_name,
        section.llm_dtype,
    )

    return SpeechLLM(features, mapper, llm, chat_template), tokenizer, info


def add_llm_lora(
    mapper: SpeechMapper, llm: TransformerLM, *, rank: int, alpha: float, dropout_p: float
) -> LLMLoRAConfig:
    """Gives ``mapper`` new LoRA adapters for ``llm`` and attaches them."""
    attention = llm.decoder.layers[0].self_attn  # type: ignore[index]

    config = LLMLoRAConfig(
        rank=rank,
        alpha=alpha,
        dropout_p=dropout_p,
        num_layers=len(llm.decoder.layers),  # type: ignore[arg-type]
        model_dim=llm.decoder_frontend.embed.weight.size(1),
        q_dim=int(attention.q_proj.output_dim),  # type: ignore[arg-type]
        v_dim=int(attention.v_proj.output_dim),  # type: ignore[arg-type]
    )

    device = next(mapper.parameters()).device

    mapper.llm_lora = LLMLoRA(config).to(device)

    mapper.llm_lora.attach(llm)

    return config


def _check_same_embeddings(info: MapperCard, llm: TransformerLM, llm_name: str, *, allow_other_llm: bool) -> None:
    """A mapper regresses onto one LLM's embedding table; another LLM reads its
    output as noise unless it shares that table (e.g. a local copy)."""
    attached_table = llm.decoder_frontend.embed.weight

    try:
        trained_table = load_embedding_table(info.llm, device=torch.device("cpu"), dtype=torch.float32)
    except EmbeddingTableError as ex:
        if allow_other_llm:
            log.warning(
                "Attaching the mapper `{}` (trained for `{}`) to `{}` unchecked: {}", info.name, info.llm, llm_name, ex
            )

            return

        raise SpeechLLMSetupError(
            f"The mapper `{info.name}` was trained for `{info.llm}`, not `{llm_name}`, and the embeddings of `{info.llm}` cannot be read to compare ({ex}); set `speech_llm.allow_other_llm=true` if `{llm_name}` is the same model."
        ) from None

    same = trained_table.shape == attached_table.shape and torch.allclose(
        trained_table, attached_table.detach().float().cpu(), atol=1e-2, rtol=1e-2
    )

    if not same:
        attached_shape = tuple(attached_table.shape)  # type: ignore[arg-type]

        raise SpeechLLMSetupError(
            f"The mapper `{info.name}` was pretrained against the embeddings of `{info.llm}` ({tuple(trained_table.shape)}), but `{llm_name}` has other embeddings ({attached_shape}): pretrain a mapper for `{llm_name}`, or attach this one to `{info.llm}`."
        )

    log.info("`{}` has the embeddings of `{}`, which the mapper `{}` was trained for.", llm_name, info.llm, info.name)


def _mapper_card_setting(key: str) -> str:
    """Where a speech LLM's speech encoder settings come from: its mapper card, but for
    the compute dtype."""
    if key == "dtype":
        return "`speech_llm.speech_encoder_dtype`"

    card_field = {"name": "speech_encoder", "layer": "speech_encoder_layer"}.get(key, f"speech_encoder_options.{key}")

    return f"the mapper card's `{card_field}`"


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None
