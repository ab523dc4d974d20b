"""``fairseq2 speechmapper model-info NAME``."""

from __future__ import annotations

import torch

from fairseq2.assets import get_asset_store
from fairseq2.models import load_model

from fairseq2_speechmapper.models.speechmapper import SpeechMapper

_MAPPER_FIELDS = ("speech_encoder", "speech_encoder_layer", "llm", "pad_token_id")


def print_model_info(name: str) -> int:
    """Loads the model of card ``name`` on the CPU (which checks the card and
    the checkpoint) and prints what a user needs to know about it."""
    card = get_asset_store().retrieve_card(name)

    model = load_model(card, device=torch.device("cpu"))

    num_params = sum(p.numel() for p in model.parameters())

    lines: dict[str, object] = {
        "name": card.name,
        "family": card.field("model_family").as_(str),
        "arch": card.field("model_arch").as_(str) if card.has_field("model_arch") else None,
        "class": type(model).__name__,
        "parameters": f"{num_params:,} ({num_params / 1e6:.1f}M)",
    }

    if isinstance(model, SpeechMapper):
        lines["input dim"] = model.input_dim
        lines["output dim"] = model.llm_dim
        lines["downsampling"] = f"{model.downsampling_factor}x (at least {model.min_input_len} input frames)"

        if model.integrates_and_fires:
            lines["downsampling"] += ", then integrate-and-fire: one vector per token"

        for field in _MAPPER_FIELDS:
            if card.has_field(field):
                lines[field] = card.field(field).as_(object)

    for label, value in lines.items():
        if value is not None:
            print(f"{label + ':':<22}{value}")

    return 0
