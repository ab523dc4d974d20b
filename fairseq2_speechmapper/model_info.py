"""``fairseq2 speechmapper model-info NAME``."""

from __future__ import annotations

import torch

from fairseq2.assets import get_asset_store
from fairseq2.models import load_model

from fairseq2_speechmapper.models.speechmapper import SpeechMapper

_MAPPER_FIELDS = ("speech_encoder", "speech_encoder_layer", "llm", "pad_token")


def print_model_info(name: str) -> int:
    """Loads the model of card ``name`` on the CPU (which checks the card and
    the checkpoint) and prints what a user needs to know about it."""
    card = get_asset_store().retrieve_card(name)

    model = load_model(card, device=torch.device("cpu"))

    num_params = sum(p.numel() for p in model.parameters())

    print(f"name:        {card.name}")
    print(f"family:      {card.field('model_family').as_(str)}")

    if card.has_field("model_arch"):
        print(f"arch:        {card.field('model_arch').as_(str)}")

    print(f"class:       {type(model).__name__}")
    print(f"parameters:  {num_params:,} ({num_params / 1e6:.1f}M)")

    if isinstance(model, SpeechMapper):
        downsampling = int(model.output_lengths(torch.tensor([10_000])).item())

        print(f"input dim:   {model.input_dim}")
        print(f"output dim:  {model.llm_dim}")
        print(f"frames/out:  {10_000 / downsampling:.2f} (min input {model.min_input_len} frames)")

        for field in _MAPPER_FIELDS:
            if card.has_field(field):
                print(f"{field + ':':<13}{card.field(field).as_(object)}")

    return 0
