"""Whisper tiny.en as a recogniser of its own: its encoder *and* decoder (the
checkpoint ``make-demo-assets`` converts) transcribe a manifest. Its WER is
what the encoder's features allow: the line a mapper trained on the same
features is measured against."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import final

import soundfile
import torch

from fairseq2_speechmapper.demo.errors import DemoAssetError


@final
@dataclass(frozen=True, kw_only=True)
class Transcript:
    id: str
    reference: str
    hypothesis: str


def transcribe_manifest(
    manifest: Path, snapshot_dir: Path, *, batch_size: int = 16, max_new_tokens: int = 96
) -> list[Transcript]:
    """Transcribes each utterance of the JSONL ``manifest`` (``audio_filepath``
    relative to it, ``text``) greedily with the transformers checkpoint in
    ``snapshot_dir``, in manifest order.

    :raises DemoAssetError: The checkpoint or an audio file cannot be read.
    """
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    try:
        processor = WhisperProcessor.from_pretrained(snapshot_dir)
        model = WhisperForConditionalGeneration.from_pretrained(snapshot_dir).eval()
    except (OSError, ValueError) as ex:
        raise DemoAssetError(f"Whisper cannot be loaded from {snapshot_dir}: {ex}") from None

    entries = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]

    transcripts = []

    for start in range(0, len(entries), batch_size):
        batch = entries[start : start + batch_size]

        waveforms = []

        for entry in batch:
            audio_file = manifest.parent / entry["audio_filepath"]

            try:
                waveform, sample_rate = soundfile.read(audio_file, dtype="float32")
            except (OSError, RuntimeError) as ex:
                raise DemoAssetError(f"{audio_file}: cannot be read ({ex}).") from None

            if sample_rate != 16_000:
                raise DemoAssetError(f"{audio_file}: Whisper needs 16 kHz audio, but it is {sample_rate} Hz.")

            waveforms.append(waveform)

        inputs = processor(waveforms, sampling_rate=16_000, return_tensors="pt")

        with torch.inference_mode():
            token_ids = model.generate(inputs.input_features, max_new_tokens=max_new_tokens, num_beams=1)

        hypotheses = processor.batch_decode(token_ids, skip_special_tokens=True)

        for entry, hypothesis in zip(batch, hypotheses):
            transcripts.append(Transcript(id=entry["id"], reference=entry["text"], hypothesis=hypothesis.strip()))

    return transcripts
