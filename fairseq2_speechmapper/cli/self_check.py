"""``fairseq2 speechmapper self-check``: proves that an install works end to end
on tiny random-weight models loaded through fairseq2's real hubs."""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from fairseq2.assets import get_asset_store
from fairseq2.data.tokenizers import load_tokenizer
from fairseq2.models import load_model
from fairseq2.models.transformer_lm import TransformerLM
from fairseq2.nn.utils.padding import pad_seqs

from fairseq2_speechmapper.cli.tiny_assets import TINY_MAPPER_CARD, TINY_MAPPER_QWEN_CARD
from fairseq2_speechmapper.models.speechmapper import SpeechMapper
from fairseq2_speechmapper.speech_encoders import load_speech_encoder


def run_self_check() -> int:
    """Runs a padded batch of two synthetic utterances through speech encoder -> mapper ->
    LLM chat prompt for each tiny mapper card; returns the exit code."""
    start_time = time.perf_counter()

    waveforms = [_synthetic_utterance(1.2, seed=0), _synthetic_utterance(0.7, seed=1)]

    for mapper_card_name in (TINY_MAPPER_CARD, TINY_MAPPER_QWEN_CARD):
        _check_mapper_card(mapper_card_name, waveforms)

    elapsed = time.perf_counter() - start_time

    print(f"Self-check passed in {elapsed:.1f} s: fairseq2-speechmapper is installed and working.")

    return 0


@torch.inference_mode()
def _check_mapper_card(mapper_card_name: str, waveforms: list[Tensor]) -> None:
    card = get_asset_store().retrieve_card(mapper_card_name)

    speech_encoder_name = card.field("speech_encoder").as_(str)
    speech_encoder_layer = card.field("speech_encoder_layer").as_(int)
    llm_name = card.field("llm").as_(str)

    speech_encoder = load_speech_encoder(speech_encoder_name, layer=speech_encoder_layer, device=torch.device("cpu"))

    mapper = load_model(card, device=torch.device("cpu")).eval()
    if not isinstance(mapper, SpeechMapper):
        raise TypeError(f"The `{mapper_card_name}` card does not hold a SpeechMapper.")

    llm = load_model(llm_name, device=torch.device("cpu")).eval()
    if not isinstance(llm, TransformerLM):
        raise TypeError(f"The `{llm_name}` card does not hold a TransformerLM.")

    tokenizer = load_tokenizer(llm_name)

    print(
        f"ok  loaded {mapper_card_name}: speech encoder {speech_encoder_name} (layer {speech_encoder_layer}), LLM {llm_name}, tokenizer (vocabulary {tokenizer.vocab_info.size})"
    )

    speech_encoder_inputs, speech_encoder_inputs_layout = pad_seqs(
        [speech_encoder.prepare_input(w, 16_000) for w in waveforms]
    )

    features, features_layout = speech_encoder(speech_encoder_inputs, speech_encoder_inputs_layout)

    speech_embeds, speech_layout = mapper(features, features_layout)

    expected_lens = mapper.output_lengths(features_layout.seq_lens_pt).tolist()
    if speech_layout.seq_lens != expected_lens:
        raise RuntimeError(f"The mapper returned lengths {speech_layout.seq_lens}, not {expected_lens}.")

    print(
        f"ok  {len(waveforms)} utterances -> speech encoder features {features_layout.seq_lens} frames x {features.size(-1)} -> mapper {speech_layout.seq_lens} vectors x {speech_embeds.size(-1)}"
    )

    prompt = tokenizer.create_encoder(mode="prompt")("Transcribe the audio:")

    embed = llm.decoder_frontend.embed  # type: ignore[union-attr]

    prompt_embeds = embed(prompt)

    llm_inputs, llm_layout = pad_seqs(
        [torch.cat([prompt_embeds, speech_embeds[i, :n]]) for i, n in enumerate(speech_layout.seq_lens)]
    )

    logits = llm.final_proj(llm.decoder(llm_inputs, llm_layout))  # type: ignore[operator]

    if not torch.isfinite(logits).all():
        raise RuntimeError(f"{llm_name} returned non-finite logits on mapped speech.")

    print(f"ok  {llm_name} ran on prompt + mapped speech: logits {tuple(logits.shape)}")


def _synthetic_utterance(seconds: float, *, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)

    num_samples = int(seconds * 16_000)

    time_axis = torch.arange(num_samples) / 16_000

    # A gliding tone with noise: non-constant spectrum, as fbank normalisation needs.
    tone = torch.sin(2 * math.pi * (200 + 300 * time_axis) * time_axis)

    noise = 0.05 * torch.randn(num_samples, generator=generator)

    return 0.5 * tone + noise
