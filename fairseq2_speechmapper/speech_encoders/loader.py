from __future__ import annotations

from collections.abc import Callable
from typing import Final

import torch
from torch.nn import Module

from fairseq2.assets import AssetCard, get_asset_store
from fairseq2.models import load_model
from fairseq2.models.wav2vec2 import Wav2Vec2Model

from fairseq2_speechmapper.models.w2vbert2 import W2VBERT2_FAMILY, W2VBert2Model
from fairseq2_speechmapper.speech_encoders.base import SpeechEncoder
from fairseq2_speechmapper.speech_encoders.w2vbert2 import W2VBert2SpeechEncoder
from fairseq2_speechmapper.speech_encoders.wav2vec2 import Wav2Vec2SpeechEncoder

SpeechEncoderWrapper = Callable[[Module, AssetCard, int | None], SpeechEncoder]
"""Wraps a loaded model of one family as a :class:`SpeechEncoder` (model, card,
feature layer or ``None`` for the last)."""


def _wrap_wav2vec2(model: Module, card: AssetCard, layer: int | None) -> SpeechEncoder:
    if not isinstance(model, Wav2Vec2Model):
        raise TypeError(f"The `{card.name}` card does not hold a wav2vec2 model.")

    normalize_waveform = bool(card.metadata.get("normalize_waveform", False))

    if layer is None:
        layer = len(model.encoder.layers)  # type: ignore[arg-type]

    return Wav2Vec2SpeechEncoder(model, layer, normalize_waveform=normalize_waveform)


def _wrap_w2vbert2(model: Module, card: AssetCard, layer: int | None) -> SpeechEncoder:
    if not isinstance(model, W2VBert2Model):
        raise TypeError(f"The `{card.name}` card does not hold a w2v-BERT 2.0 model.")

    return W2VBert2SpeechEncoder(model, model.num_layers if layer is None else layer)


_WRAPPERS: Final[dict[str, SpeechEncoderWrapper]] = {
    "wav2vec2": _wrap_wav2vec2,
    W2VBERT2_FAMILY: _wrap_w2vbert2,
}


class SpeechEncoderNotSupportedError(Exception):
    pass


def load_speech_encoder(
    name: str,
    *,
    layer: int | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> SpeechEncoder:
    """Loads the speech foundation model of card ``name`` through fairseq2's
    model hub, frozen and in eval mode, as a :class:`SpeechEncoder` returning
    the features of ``layer`` (1-based; ``None`` for the last layer)."""
    card = get_asset_store().retrieve_card(name)

    family = card.field("model_family").as_(str)

    wrap = _WRAPPERS.get(family)
    if wrap is None:
        raise SpeechEncoderNotSupportedError(
            f"The `{name}` card names the `{family}` model family, which is not a supported speech encoder (supported: {', '.join(sorted(_WRAPPERS))})."
        )

    model = load_model(card, device=device, dtype=dtype)

    encoder = wrap(model, card, layer)

    # fairseq2 hands models out trainable and in training mode.
    encoder.eval().requires_grad_(False)

    return encoder
