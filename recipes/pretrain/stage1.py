"""Assembles stage 1 from cards: the frozen SFM, the LLM's tokenizer and
token-embedding table (never the LLM itself) and the pad token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol, final

import torch
from torch import Tensor
from torch.nn import Module

from fairseq2.data.tokenizers import Tokenizer
from fairseq2.nn import BatchLayout
from fairseq2.nn.utils.padding import pad_seqs

from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.features import FeatureCache, SFMSection, open_cached_features
from fairseq2_speechmapper.features.cache import speech_encoder_setting
from fairseq2_speechmapper.recipes.pretrain.criterion import EmbeddingTargets, build_embedding_targets
from fairseq2_speechmapper.speech_encoders import SpeechEncoder, load_speech_encoder

# Tried in order when the tokenizer has no pad token: tokens that LLM
# vocabularies reserve and never produce in text.
_RESERVED_PAD_TOKENS: Final = (
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_0|>",
    "<pad>",
    "<|pad|>",
)


class PadTokenError(Exception):
    pass


def resolve_pad_idx(tokenizer: Tokenizer, pad_token: str | None, *, llm_name: str) -> int:
    """Returns the id of pad_token; by default the tokenizer's pad token,
    else the first reserved token the vocabulary has."""
    if pad_token is None:
        pad_idx = tokenizer.vocab_info.pad_idx
        if pad_idx is not None:
            return int(pad_idx)

        for candidate in _RESERVED_PAD_TOKENS:
            candidate_idx = _maybe_single_token_idx(tokenizer, candidate)
            if candidate_idx is not None:
                return candidate_idx

        raise PadTokenError(
            f"The tokenizer of `{llm_name}` has no pad token and none of {', '.join(_RESERVED_PAD_TOKENS)}; set `llm.pad_token` to an unused token of its vocabulary."
        )

    pad_idx = _maybe_single_token_idx(tokenizer, pad_token)
    if pad_idx is None:
        raise PadTokenError(f"`llm.pad_token` {pad_token!r} is not a single token of the `{llm_name}` vocabulary.")

    return pad_idx


def _maybe_single_token_idx(tokenizer: Tokenizer, token: str) -> int | None:
    ids = tokenizer.create_raw_encoder()(token)

    return int(ids[0]) if ids.numel() == 1 else None


def decode_token(tokenizer: Tokenizer, token_idx: int) -> str:
    return tokenizer.create_decoder(skip_special_tokens=False)(torch.tensor([token_idx]))


@final
class SpeechFeatureEncoder:
    """Runs the frozen SFM on a batch, optionally remembering each utterance's
    features in memory: the SFM never trains, so later epochs reuse them (the
    paper precomputes them once). Meant for corpora whose features fit in RAM."""

    def __init__(self, speech_encoder: SpeechEncoder, *, cache_in_memory: bool) -> None:
        self.speech_encoder = speech_encoder

        self._dtype = next(speech_encoder.parameters()).dtype

        self._cache: dict[str, Tensor] | None = {} if cache_in_memory else None

    @property
    def layer(self) -> int:
        return self.speech_encoder.layer

    @property
    def output_dim(self) -> int:
        return self.speech_encoder.output_dim

    @torch.no_grad()
    def __call__(self, batch: SpeechBatch) -> tuple[Tensor, BatchLayout]:
        if self._cache is None:
            return self.speech_encoder(batch.inputs.to(self._dtype), batch.inputs_layout)  # type: ignore[no-any-return]

        cache = self._cache

        missing = [i for i, source in enumerate(batch.sources) if source not in cache]

        if missing:
            input_lens = [batch.input_lens[i] for i in missing]

            inputs = batch.inputs[missing, : max(input_lens)].to(self._dtype)

            features, features_layout = self.speech_encoder(inputs, BatchLayout.of(inputs, input_lens))

            for row, i in enumerate(missing):
                cache[batch.sources[i]] = features[row, : features_layout.seq_lens[row]].clone()

        return pad_seqs([cache[source] for source in batch.sources])


class SFMFeatures(Protocol):
    """The SFM's features of a batch: computed (:class:`SpeechFeatureEncoder`)
    or read from a feature cache (:class:`CachedFeatureEncoder`)."""

    @property
    def layer(self) -> int:
        """The SFM layer the features come from."""

    @property
    def output_dim(self) -> int:
        """The features' width."""

    def __call__(self, batch: SpeechBatch) -> tuple[Tensor, BatchLayout]: ...


def load_sfm_features(
    sfm: SFMSection,
    *,
    device: torch.device,
    cache_in_memory: bool,
    feature_cache: FeatureCache | None,
    mapper_frame_average: int,
    asked_by: str = "`speech_encoder`",
    setting: Callable[[str], str] = speech_encoder_setting,
) -> SFMFeatures:
    """The features of the frozen SFM ``sfm`` names: computed on audio, or,
    with ``feature_cache``, read from it without loading the SFM (the cache
    must hold what ``sfm``, set by ``asked_by``, asks for)."""
    if feature_cache is not None:
        return open_cached_features(
            feature_cache, sfm, mapper_frame_average=mapper_frame_average, asked_by=asked_by, setting=setting
        )

    speech_encoder = load_speech_encoder(
        sfm.name, layer=sfm.layer, device=device, dtype=sfm.dtype, options=sfm.encoder_options()
    )

    return SpeechFeatureEncoder(speech_encoder, cache_in_memory=cache_in_memory)


@final
class Stage1Model:
    """The frozen SFM followed by the (trainable) mapper, with the targets the
    mapper's output is compared to."""

    def __init__(
        self, speech_encoder: SFMFeatures, mapper: Module, embedding_table: Tensor, pad_idx: int
    ) -> None:
        self.speech_encoder = speech_encoder
        self.mapper = mapper
        self.embedding_table = embedding_table
        self.pad_idx = pad_idx

    def __call__(self, batch: SpeechBatch) -> tuple[Tensor, list[int], EmbeddingTargets]:
        """Returns the mapper's outputs *Shape:* :math:`(N,T,M)`, their lengths
        and the aligned targets."""
        features, features_layout = self.speech_encoder(batch)

        outputs, outputs_layout = self.mapper(features.float(), features_layout)

        output_lens = [int(n) for n in outputs_layout.seq_lens]

        targets = build_embedding_targets(batch.target_ids, output_lens, self.embedding_table, self.pad_idx)

        return outputs, output_lens, targets
