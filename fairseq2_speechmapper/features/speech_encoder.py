"""The frozen speech encoder's features of a batch: computed on audio, or read from the
feature cache; stage 1 and the speech LLM read them the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, final

import torch
from torch import Tensor

from fairseq2.nn import BatchLayout
from fairseq2.nn.utils.padding import pad_seqs

from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.datasets.audio import InputPreparer
from fairseq2_speechmapper.features.cache import FeatureCache, speech_encoder_setting
from fairseq2_speechmapper.features.config import SpeechEncoderSection
from fairseq2_speechmapper.features.reader import open_cached_features
from fairseq2_speechmapper.speech_encoders import SpeechEncoder, load_speech_encoder


@final
class SpeechFeatureEncoder:
    """Runs the frozen speech encoder on a batch, optionally remembering each utterance's
    features in memory: the speech encoder never trains, so later epochs reuse them (the
    paper precomputes them once). Meant for corpora whose features fit in RAM."""

    def __init__(self, speech_encoder: SpeechEncoder, *, cache_in_memory: bool) -> None:
        self.speech_encoder = speech_encoder

        self._dtype = next(speech_encoder.parameters()).dtype

        self._cache: dict[str, Tensor] | None = {} if cache_in_memory else None

    @property
    def layer(self) -> int:
        return self.speech_encoder.layer

    @property
    def prepare_input(self) -> InputPreparer:
        return self.speech_encoder.prepare_input

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


class SpeechEncoderFeatures(Protocol):
    """The speech encoder's features of a batch: computed (:class:`SpeechFeatureEncoder`)
    or read from a feature cache (:class:`CachedFeatureEncoder`)."""

    @property
    def layer(self) -> int:
        """The speech encoder layer the features come from."""

    @property
    def output_dim(self) -> int:
        """The features' width."""

    @property
    def prepare_input(self) -> InputPreparer | None:
        """How a waveform becomes the speech encoder's input when audio is read; ``None``
        when the features are read from a cache."""

    def __call__(self, batch: SpeechBatch) -> tuple[Tensor, BatchLayout]: ...


def load_speech_encoder_features(
    section: SpeechEncoderSection,
    *,
    device: torch.device,
    cache_in_memory: bool,
    feature_cache: FeatureCache | None,
    mapper_frame_average: int,
    asked_by: str = "`speech_encoder`",
    setting: Callable[[str], str] = speech_encoder_setting,
) -> SpeechEncoderFeatures:
    """The features of the frozen speech encoder ``section`` names: computed
    on audio, or, with ``feature_cache``, read from it without loading the
    speech encoder (the cache must hold what ``section``, set by ``asked_by``,
    asks for)."""
    if feature_cache is not None:
        return open_cached_features(
            feature_cache, section, mapper_frame_average=mapper_frame_average, asked_by=asked_by, setting=setting
        )

    speech_encoder = load_speech_encoder(
        section.name, layer=section.layer, device=device, dtype=section.dtype, options=section.encoder_options()
    )

    return SpeechFeatureEncoder(speech_encoder, cache_in_memory=cache_in_memory)
