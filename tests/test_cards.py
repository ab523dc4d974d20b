from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch.nn import Module

from fairseq2.assets import AssetCard, get_asset_store
from fairseq2.data.tokenizers import load_tokenizer
from fairseq2.models import ModelFamily, ModelHub, ModelHubAccessor, load_model
from fairseq2.models.transformer_lm import TransformerLM
from fairseq2.models.wav2vec2 import Wav2Vec2Model
from fairseq2.runtime.dependency import get_dependency_resolver

from fairseq2_speechmapper.cli.tiny_assets import (
    TINY_LLAMA_CARD,
    TINY_MAPPER_CARD,
    TINY_QWEN_CARD,
    TINY_SPEECH_ENCODER_CARD,
)
from fairseq2_speechmapper.models.speechmapper import SpeechMapperConfig

ASSETS_DIR = Path(__file__).parent.parent / "assets"


def _our_model_card_names() -> list[str]:
    names = []

    for file in sorted(ASSETS_DIR.rglob("*.yaml")):
        with file.open(encoding="utf-8") as fp:
            names.extend(doc["name"] for doc in yaml.safe_load_all(fp) if doc and "model_family" in doc)

    return names


def _model_hub(card: AssetCard) -> ModelHub[Module, object]:
    family_name = card.field("model_family").as_(str)

    family = get_dependency_resolver().maybe_resolve(ModelFamily, key=family_name)

    assert family is not None, f"{card.name}: unknown model family {family_name}"

    return ModelHubAccessor(family_name, kls=Module, config_kls=object)()


def test_cards_ship_in_the_package() -> None:
    names = _our_model_card_names()

    assert "speechmapper_paper_llama3_1_8b_instruct" in names
    assert "eurollm_9b_instruct" in names

    store = get_asset_store()

    for name in names:
        assert f"{name}@" in store.asset_names, name


@pytest.mark.parametrize("name", _our_model_card_names())
def test_card_resolves_to_known_family_arch_and_config(name: str) -> None:
    card = get_asset_store().retrieve_card(name)

    hub = _model_hub(card)

    config = hub.get_model_config(card)

    assert config is not None

    if card.has_field("model_arch"):
        assert card.field("model_arch").as_(str) in hub.get_archs()

    # Real checkpoints are fetched by users with network access.
    if card.has_field("checkpoint"):
        uri = card.field("checkpoint").as_(str)

        assert uri.startswith(("hg://", "https://")), uri

    # The whole model can be built (on the meta device: no memory, no download).
    model = hub.create_new_model(config, device=torch.device("cpu"), meta=True)

    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", [n for n in _our_model_card_names() if n.startswith("speechmapper_")])
def test_mapper_card_widths_match_its_llm_and_speech_encoder(name: str) -> None:
    store = get_asset_store()

    card = store.retrieve_card(name)

    config = _model_hub(card).get_model_config(card)

    assert isinstance(config, SpeechMapperConfig)

    llm_card = store.retrieve_card(card.field("llm").as_(str))

    llm_config = _model_hub(llm_card).get_model_config(llm_card)

    assert config.llm_dim == llm_config.model_dim  # type: ignore[attr-defined]

    speech_encoder_card = store.retrieve_card(card.field("speech_encoder").as_(str))

    speech_encoder_hub = _model_hub(speech_encoder_card)

    speech_encoder = speech_encoder_hub.create_new_model(
        speech_encoder_hub.get_model_config(speech_encoder_card), device=torch.device("cpu"), meta=True
    )

    assert config.input_dim == speech_encoder.model_dim

    assert 1 <= card.field("speech_encoder_layer").as_(int) <= 24


def test_tiny_assets_load_through_fairseq2_hubs() -> None:
    speech_encoder = load_model(TINY_SPEECH_ENCODER_CARD, device=torch.device("cpu"))

    assert isinstance(speech_encoder, Wav2Vec2Model)

    for llm_name in (TINY_LLAMA_CARD, TINY_QWEN_CARD):
        llm = load_model(llm_name, device=torch.device("cpu"))

        assert isinstance(llm, TransformerLM)

        tokenizer = load_tokenizer(llm_name)

        text = "transcribe the audio 2026"

        ids = tokenizer.create_raw_encoder()(text)

        assert tokenizer.create_decoder()(ids) == text
        assert int(ids.max()) < llm.decoder_frontend.embed.weight.size(0)  # type: ignore[union-attr]

    mapper = load_model(TINY_MAPPER_CARD, device=torch.device("cpu"))

    assert mapper.llm_dim == llm.decoder_frontend.embed.weight.size(1)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("llm_name", "expected_prompt", "eos_token"),
    [
        (
            TINY_LLAMA_CARD,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            "<|eot_id|>",
        ),
        (
            TINY_QWEN_CARD,
            "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
            "<|im_end|>",
        ),
    ],
)
def test_tiny_tokenizers_carry_their_family_chat_template(llm_name: str, expected_prompt: str, eos_token: str) -> None:
    tokenizer = load_tokenizer(llm_name)

    encoder = tokenizer.create_encoder(mode="prompt")

    prompt = encoder.apply_chat_template(  # type: ignore[attr-defined]
        [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
    )

    assert prompt == expected_prompt

    decoder = tokenizer.create_decoder()

    assert decoder(torch.tensor([tokenizer.vocab_info.eos_idx])) == eos_token
