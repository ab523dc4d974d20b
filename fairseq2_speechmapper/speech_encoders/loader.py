from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import torch
from torch.nn import Module

from fairseq2.assets import AssetCard, get_asset_store
from fairseq2.models import load_model
from fairseq2.models.hg import HG_FAMILY
from fairseq2.models.wav2vec2 import Wav2Vec2Model

from fairseq2_speechmapper.errors import SpeechMapperError
from fairseq2_speechmapper.models.w2vbert2 import W2VBERT2_FAMILY, W2VBert2Model
from fairseq2_speechmapper.speech_encoders.base import SpeechEncoder
from fairseq2_speechmapper.speech_encoders.w2vbert2 import W2VBert2SpeechEncoder
from fairseq2_speechmapper.speech_encoders.wav2vec2 import Wav2Vec2SpeechEncoder
from fairseq2_speechmapper.speech_encoders.whisper import WhisperSpeechEncoder, WhisperWindow


@dataclass(kw_only=True)
class SpeechEncoderOptions:
    """Options of particular speech encoder families."""

    whisper_window: WhisperWindow = "30s"
    """Whisper: encode in the 30 s window or in a window as long as each
    utterance (see :class:`WhisperSpeechEncoder`)."""


SpeechEncoderWrapper = Callable[[Module, AssetCard, int | None, SpeechEncoderOptions], SpeechEncoder]
"""Wraps a loaded model of one family as a :class:`SpeechEncoder` (model, card,
feature layer or ``None`` for the last, options)."""


def _wrap_wav2vec2(model: Module, card: AssetCard, layer: int | None, options: SpeechEncoderOptions) -> SpeechEncoder:
    if not isinstance(model, Wav2Vec2Model):
        raise TypeError(f"The `{card.name}` card does not hold a wav2vec2 model.")

    normalize_waveform = bool(card.metadata.get("normalize_waveform", False))

    if layer is None:
        layer = len(model.encoder.layers)  # type: ignore[arg-type]

    return Wav2Vec2SpeechEncoder(model, layer, normalize_waveform=normalize_waveform)


def _wrap_w2vbert2(model: Module, card: AssetCard, layer: int | None, options: SpeechEncoderOptions) -> SpeechEncoder:
    if not isinstance(model, W2VBert2Model):
        raise TypeError(f"The `{card.name}` card does not hold a w2v-BERT 2.0 model.")

    return W2VBert2SpeechEncoder(model, model.num_layers if layer is None else layer)


def _wrap_hg(model: Module, card: AssetCard, layer: int | None, options: SpeechEncoderOptions) -> SpeechEncoder:
    from transformers import WhisperForConditionalGeneration, WhisperModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    if isinstance(model, WhisperEncoder):
        encoder = model
    elif isinstance(model, (WhisperModel, WhisperForConditionalGeneration)):
        encoder = model.get_encoder()
    else:
        raise TypeError(
            f"The `{card.name}` card holds a transformers {type(model).__name__}, but the only `hg` speech encoder supported is Whisper."
        )

    return WhisperSpeechEncoder(encoder, len(encoder.layers) if layer is None else layer, window=options.whisper_window)


_WRAPPERS: Final[dict[str, SpeechEncoderWrapper]] = {
    "wav2vec2": _wrap_wav2vec2,
    W2VBERT2_FAMILY: _wrap_w2vbert2,
    HG_FAMILY: _wrap_hg,
}


class SpeechEncoderNotSupportedError(SpeechMapperError):
    pass


def load_speech_encoder(
    name: str | AssetCard,
    *,
    layer: int | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    options: SpeechEncoderOptions | None = None,
) -> SpeechEncoder:
    """Loads the speech foundation model of card ``name`` (or of an
    :class:`AssetCard` not in the asset store) through fairseq2's model hub,
    frozen and in eval mode, as a :class:`SpeechEncoder` returning the features
    of ``layer`` (1-based; ``None`` for the last layer)."""
    if isinstance(name, AssetCard):
        card = name
    else:
        card = get_asset_store().retrieve_card(name)

    name = card.name

    family = card.field("model_family").as_(str)

    wrap = _WRAPPERS.get(family)
    if wrap is None:
        raise SpeechEncoderNotSupportedError(
            f"The `{name}` card names the `{family}` model family, which is not a supported speech encoder (supported: {', '.join(sorted(_WRAPPERS))})."
        )

    with card_hf_hub_cache(card):
        model = load_model(card, device=device, dtype=dtype)

    encoder = wrap(model, card, layer, options or SpeechEncoderOptions())

    # fairseq2 hands models out trainable and in training mode.
    encoder.eval().requires_grad_(False)

    return encoder


_HF_HUB_ENV_VARS: Final = ("HF_HUB_CACHE", "HF_HUB_OFFLINE")


@contextmanager
def card_hf_hub_cache(card: AssetCard) -> Iterator[None]:
    """Points Hugging Face's hub offline at the directory in the card's
    ``hf_hub_cache`` field (if any) while the card loads, then restores it.

    fairseq2's ``hg`` family resolves ``hf_name`` through the hub cache, even
    for local checkpoints such as the demo Whisper (``demo/whisper.py``); other
    ``hg`` cards and later downloads are left as they were.
    """
    field = card.maybe_get_field("hf_hub_cache")
    if field is None:
        yield

        return

    cache_dir = str(Path(field.as_(str)).expanduser())

    import huggingface_hub.constants as hub_constants
    import transformers.utils.hub as transformers_hub

    # Both read the environment into these globals once, at import, which has
    # happened by now (fairseq2 imports them).
    overrides: list[tuple[object, str, object]] = [
        (hub_constants, "HF_HUB_CACHE", cache_dir),
        (hub_constants, "HF_HUB_OFFLINE", True),
        (transformers_hub, "TRANSFORMERS_CACHE", cache_dir),
        (transformers_hub, "_is_offline_mode", True),
    ]

    saved_values = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in overrides]

    saved_env = {var: os.environ.get(var) for var in _HF_HUB_ENV_VARS}

    try:
        os.environ.update({"HF_HUB_CACHE": cache_dir, "HF_HUB_OFFLINE": "1"})

        for obj, attr, value in overrides:
            setattr(obj, attr, value)

        yield
    finally:
        for obj, attr, value in saved_values:
            setattr(obj, attr, value)

        for var, env_value in saved_env.items():
            if env_value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = env_value
