"""Checks of the converted demo models against their sources, shared by
``fairseq2 speechmapper make-demo-assets`` and the tests.

The cards are applied in-process as :class:`AssetCard` objects, so the checks
load through fairseq2's hubs exactly as ``load_model(name)`` would, without
registering the cards directory (fairseq2's container freezes after its first
use).
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import numpy as np
import torch

from fairseq2_speechmapper.demo.builder import DemoAssets

KNOWN_ANSWER_QUESTION: Final = "What is the capital of France?"
KNOWN_ANSWER: Final = "Paris"


@final
@dataclass(kw_only=True)
class SmolLM2Check:
    max_abs_logit_diff: float
    num_prompt_tokens: int
    answer: str


@final
@dataclass(kw_only=True)
class WhisperCheck:
    max_abs_weight_diff: float
    """Between the float32 checkpoint and the float16 CTranslate2 file, upcast."""

    max_abs_feature_diff_ct2: float | None
    """Between the encoders' outputs on the same log-mel; ``None`` without ctranslate2."""

    num_frames: int
    feature_abs_mean: float


@final
@dataclass(kw_only=True)
class DemoChecks:
    smollm2: SmolLM2Check
    whisper: WhisperCheck

    @property
    def passed(self) -> bool:
        ct2_diff = self.whisper.max_abs_feature_diff_ct2

        return (
            self.smollm2.max_abs_logit_diff < 1e-3
            and KNOWN_ANSWER in self.smollm2.answer
            and self.whisper.max_abs_weight_diff == 0.0
            and (ct2_diff is None or ct2_diff < 1e-3)
        )

    def summary_lines(self) -> list[str]:
        smollm2, whisper = self.smollm2, self.whisper

        ct2_diff = whisper.max_abs_feature_diff_ct2
        ct2_text = "ctranslate2 not installed" if ct2_diff is None else f"{ct2_diff:.2e}"

        return [
            f"SmolLM2: max |fairseq2 - transformers| logit = {smollm2.max_abs_logit_diff:.2e} over {smollm2.num_prompt_tokens} tokens; greedy answer: {smollm2.answer!r}",
            f"Whisper: max |weight - CT2 fp16| = {whisper.max_abs_weight_diff:.1e}; max |encoder - CT2 encode| = {ct2_text} ({whisper.num_frames} speech frames, mean |feature| {whisper.feature_abs_mean:.3f})",
        ]


def run_demo_checks(assets: DemoAssets) -> DemoChecks:
    """Checks both converted models against their sources, Whisper on the
    first dev utterance of the demo corpus."""
    from fairseq2_speechmapper.demo.smollm2 import SMOLLM2_CARD
    from fairseq2_speechmapper.demo.whisper import locate_whisper_ct2

    (smollm2_card,) = (card for card in assets.cards if card["name"] == SMOLLM2_CARD)

    with assets.dev_manifest.open(encoding="utf-8") as fp:
        first_dev_utterance = json.loads(fp.readline())

    wav_file = assets.corpus_dir / first_dev_utterance["audio_filepath"]

    return DemoChecks(
        smollm2=check_smollm2(smollm2_card),
        whisper=check_whisper(assets.whisper_snapshot_dir, locate_whisper_ct2(), wav_file),
    )


def card_from_dict(card: dict[str, object]) -> object:
    from fairseq2.assets import AssetCard

    name = str(card["name"])

    return AssetCard(name, {**card, "name": name})


def check_smollm2(card: dict[str, object], *, max_gen_len: int = 24) -> SmolLM2Check:
    """Compares fairseq2's logits with transformers' on a chat prompt and asks
    the known-answer question with fairseq2's greedy generator."""
    from transformers import AutoModelForCausalLM

    from fairseq2.data.tokenizers import load_tokenizer
    from fairseq2.generation.sampling import SamplingSequenceGenerator, TopKSampler
    from fairseq2.models import load_model
    from fairseq2.nn import BatchLayout

    asset_card = card_from_dict(card)

    model = load_model(asset_card, dtype=torch.float32).eval()  # type: ignore[call-overload]
    tokenizer = load_tokenizer(asset_card)  # type: ignore[arg-type]

    chat = [{"role": "user", "content": KNOWN_ANSWER_QUESTION}]
    prompt_ids: list[int] = tokenizer.raw.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)  # type: ignore[attr-defined]

    seqs = torch.tensor([prompt_ids])

    hf_model = AutoModelForCausalLM.from_pretrained(str(card["checkpoint"]), dtype=torch.float32).eval()

    with torch.inference_mode():
        fs2_logits = model(seqs, BatchLayout.of(seqs))
        hf_logits = hf_model(seqs).logits

        max_abs_diff = (fs2_logits - hf_logits).abs().max().item()

        generator = SamplingSequenceGenerator(
            model,
            tokenizer.vocab_info,
            TopKSampler(k=1),
            max_gen_len=max_gen_len,  # type: ignore[arg-type]
        )

        output = generator(seqs, BatchLayout.of(seqs))

    answer = tokenizer.decode(output.hypotheses[0][0].seq, skip_special_tokens=True)  # type: ignore[attr-defined]

    return SmolLM2Check(max_abs_logit_diff=max_abs_diff, num_prompt_tokens=len(prompt_ids), answer=answer.strip())


def check_whisper(snapshot_dir: Path, ct2_file: Path, wav_file: Path) -> WhisperCheck:
    """Compares the converted weights bit-exactly with the CTranslate2 file and
    the encoder's output with CTranslate2's ``encode`` when it is installed."""
    from safetensors.torch import load_file
    from transformers import WhisperFeatureExtractor, WhisperModel

    from fairseq2_speechmapper.demo.whisper import (
        read_whisper_ct2,
        whisper_config_from_ct2,
        whisper_state_dict_from_ct2,
    )

    ct2_model = read_whisper_ct2(ct2_file)

    expected = whisper_state_dict_from_ct2(ct2_model, whisper_config_from_ct2(ct2_model))
    saved = load_file(snapshot_dir / "model.safetensors")

    if saved.keys() != expected.keys():
        raise AssertionError(f"{snapshot_dir} holds other tensors than {ct2_file}.")

    max_weight_diff = 0.0
    for key, tensor in saved.items():
        # Bit-exact: every float32 weight is its float16 source, widened.
        if not torch.equal(tensor, expected[key]) or not torch.equal(tensor.half().float(), tensor):
            max_weight_diff = max(max_weight_diff, (tensor - expected[key]).abs().max().item(), 1e-30)

    audio = read_wav(wav_file)

    feature_extractor = WhisperFeatureExtractor.from_pretrained(snapshot_dir)
    mel = feature_extractor(audio, sampling_rate=16_000, return_tensors="np").input_features

    model = WhisperModel.from_pretrained(snapshot_dir).eval()

    with torch.inference_mode():
        features = model.encoder(torch.from_numpy(mel)).last_hidden_state.numpy()

    if not np.isfinite(features).all():
        raise AssertionError("The converted Whisper encoder's output is not finite.")

    # 50 encoder frames per second of audio; the rest encodes padding.
    num_frames = min(features.shape[1], -(-len(audio) // 320))

    try:
        import ctranslate2
    except ImportError:
        ct2_diff = None
    else:
        ct2_whisper = ctranslate2.models.Whisper(str(ct2_file.parent), device="cpu", compute_type="float32")

        ct2_features = np.asarray(
            ct2_whisper.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)), to_cpu=True)
        )

        ct2_diff = float(np.abs(ct2_features - features).max())

    return WhisperCheck(
        max_abs_weight_diff=max_weight_diff,
        max_abs_feature_diff_ct2=ct2_diff,
        num_frames=num_frames,
        feature_abs_mean=float(np.abs(features[:, :num_frames]).mean()),
    )


def read_wav(path: Path) -> np.ndarray:
    """Reads a 16-bit mono WAV file as float32 in [-1, 1]."""
    with wave.open(str(path), "rb") as fp:
        if fp.getsampwidth() != 2 or fp.getnchannels() != 1:
            raise ValueError(f"{path} is not a 16-bit mono WAV file.")

        frames = fp.readframes(fp.getnframes())

    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
