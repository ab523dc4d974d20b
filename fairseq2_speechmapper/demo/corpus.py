"""A small real spoken corpus: self-written sentences synthesised by the
Debian TTS engines espeak-ng and flite (festival for the natural corpus), 16 kHz mono 16-bit WAV, with NeMo-style
JSONL manifests (``audio_filepath`` relative to the manifest)."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

from fairseq2_speechmapper.demo.errors import DemoAssetError
from fairseq2_speechmapper.demo.sentences import SENTENCES

SAMPLE_RATE: Final = 16_000

# Each sentence is spoken by this many voices.
VOICES_PER_SENTENCE: Final = 2

# Every n-th sentence goes to dev, so dev and train share no sentence.
DEV_EVERY: Final = 10


@final
@dataclass(frozen=True, kw_only=True)
class Voice:
    name: str
    engine: str
    """``espeak-ng``, ``flite`` or ``festival``."""

    voice: str
    """The engine's voice name (espeak-ng ``language+variant``, festival's
    ``voice_*`` function without the prefix)."""


VOICES: Final = [
    Voice(name="espeak_en_us", engine="espeak-ng", voice="en-us"),
    Voice(name="espeak_en_gb", engine="espeak-ng", voice="en-gb"),
    Voice(name="espeak_en_us_f3", engine="espeak-ng", voice="en-us+f3"),
    Voice(name="espeak_en_gb_m3", engine="espeak-ng", voice="en-gb+m3"),
    Voice(name="espeak_en_scotland_f2", engine="espeak-ng", voice="en-gb-scotland+f2"),
    Voice(name="espeak_en_rp_m1", engine="espeak-ng", voice="en-gb-x-rp+m1"),
    Voice(name="flite_kal16", engine="flite", voice="kal16"),
    Voice(name="flite_slt", engine="flite", voice="slt"),
    Voice(name="flite_rms", engine="flite", voice="rms"),
    Voice(name="flite_awb", engine="flite", voice="awb"),
]


@final
@dataclass(kw_only=True)
class Utterance:
    id: str
    split: str
    text: str
    """The sentence as written, for the TTS engine."""

    voice: Voice
    rate: float
    """Relative speaking rate, 1.0 = the engine's default."""

    pitch: int | None
    """espeak-ng pitch (0-99); ``None`` for flite and festival."""

    pitch_shift_cents: int = 0
    """A pitch shift applied to the engine's output (sox ``pitch``), for
    varying the pitch of voices without a pitch control (flite, festival)."""


@final
@dataclass(kw_only=True)
class CorpusSummary:
    num_utterances: dict[str, int]
    minutes: dict[str, float]
    voices: list[str]


def normalize_transcript(text: str) -> str:
    """Lower-case, no punctuation except apostrophes, single spaces."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)

    return " ".join(text.split())


def plan_utterances() -> list[Utterance]:
    """Decides deterministically who says what, how fast and how high."""
    utterances = []

    for sentence_idx, sentence in enumerate(SENTENCES):
        split = "dev" if sentence_idx % DEV_EVERY == DEV_EVERY - 1 else "train"

        for k in range(VOICES_PER_SENTENCE):
            # Steps through the voices so that each sentence gets two different ones.
            voice_idx = (sentence_idx * VOICES_PER_SENTENCE + k * 3) % len(VOICES)
            voice = VOICES[voice_idx]

            variation = (sentence_idx * 7 + k * 5) % 9

            utterances.append(
                Utterance(
                    id=f"{split}_{sentence_idx:03d}_{voice.name}",
                    split=split,
                    text=sentence,
                    voice=voice,
                    rate=0.85 + 0.05 * (variation % 6),
                    pitch=30 + 5 * variation if voice.engine == "espeak-ng" else None,
                )
            )

    return utterances


def varied_utterance(rng: random.Random, *, id: str, split: str, text: str, voice: Voice) -> Utterance:
    """``text`` spoken by ``voice`` at a rate of 0.85-1.2 and, for espeak-ng, a
    pitch of 25-75; flite and festival, which have no pitch control, shifted by
    -200 to +200 cents; drawn from ``rng`` in that order."""
    rate = round(0.85 + 0.05 * rng.randrange(8), 2)

    if voice.engine == "espeak-ng":
        pitch, shift = 25 + 5 * rng.randrange(11), 0
    else:
        pitch, shift = None, 50 * rng.randrange(-4, 5)

    return Utterance(id=id, split=split, text=text, voice=voice, rate=rate, pitch=pitch, pitch_shift_cents=shift)


# The command of each engine and the Debian package that has it.
_TTS_TOOLS: Final = {
    "espeak-ng": ("espeak-ng", "espeak-ng"),
    "flite": ("flite", "flite"),
    "festival": ("text2wave", "festival"),
}


def check_tts_tools(engines: Sequence[str] = ("espeak-ng", "flite")) -> None:
    for tool, package in [_TTS_TOOLS[engine] for engine in engines] + [("sox", "sox")]:
        if shutil.which(tool) is None:
            raise DemoAssetError(f"The demo corpus needs the `{tool}` command; run `apt-get install {package}`.")


def write_corpus(corpus_dir: Path, *, num_workers: int = 2) -> CorpusSummary:
    """Synthesises the demo corpus into ``corpus_dir/audio/SPLIT/ID.wav`` and
    writes ``corpus_dir/{train,dev}.jsonl``."""
    return synthesize_corpus(corpus_dir, plan_utterances(), voices=VOICES, num_workers=num_workers)


def synthesize_corpus(
    corpus_dir: Path, utterances: Sequence[Utterance], *, voices: Sequence[Voice], num_workers: int = 2
) -> CorpusSummary:
    """Synthesises ``utterances`` into ``corpus_dir/audio/SPLIT/ID.wav`` and
    writes one ``corpus_dir/SPLIT.jsonl`` per split, in the utterances' order;
    ``num_workers`` engine processes run at a time."""
    check_tts_tools(sorted({voice.engine for voice in voices}))

    splits = list(dict.fromkeys(u.split for u in utterances))

    for split in splits:
        (corpus_dir / "audio" / split).mkdir(parents=True, exist_ok=True)

    with ThreadPoolExecutor(max_workers=num_workers) as executor:
        durations = list(executor.map(lambda u: _synthesize(u, corpus_dir), utterances))

    num_utterances: dict[str, int] = {}
    minutes: dict[str, float] = {}

    for split in splits:
        with (corpus_dir / f"{split}.jsonl").open("w", encoding="utf-8") as fp:
            for utterance, duration in zip(utterances, durations):
                if utterance.split != split:
                    continue

                entry = {
                    "id": utterance.id,
                    "audio_filepath": f"audio/{split}/{utterance.id}.wav",
                    "duration": round(duration, 4),
                    "text": normalize_transcript(utterance.text),
                    "speaker": utterance.voice.name,
                    "voice": _describe_voice(utterance),
                }

                fp.write(json.dumps(entry, ensure_ascii=False) + "\n")

                num_utterances[split] = num_utterances.get(split, 0) + 1
                minutes[split] = minutes.get(split, 0.0) + duration / 60

    return CorpusSummary(num_utterances=num_utterances, minutes=minutes, voices=[v.name for v in voices])


def _describe_voice(utterance: Utterance) -> str:
    voice = utterance.voice
    if voice.engine == "espeak-ng":
        description = f"espeak-ng {voice.voice} rate {utterance.rate:.2f} pitch {utterance.pitch}"
    else:
        description = f"{voice.engine} {voice.voice} rate {utterance.rate:.2f}"

    if utterance.pitch_shift_cents:
        description += f" shift {utterance.pitch_shift_cents:+d} cents"

    return description


def _synthesize(utterance: Utterance, corpus_dir: Path) -> float:
    output_file = corpus_dir / "audio" / utterance.split / f"{utterance.id}.wav"

    voice = utterance.voice

    with tempfile.TemporaryDirectory() as tmp_dir:
        raw_file = Path(tmp_dir) / "raw.wav"

        stdin = None

        if voice.engine == "espeak-ng":
            # espeak-ng speaks ~175 words per minute by default.
            command = ["espeak-ng", "-v", voice.voice, "-s", str(round(175 * utterance.rate)), "-p", str(utterance.pitch), "-w", str(raw_file), utterance.text]  # fmt: skip
        elif voice.engine == "festival":
            setup = f"(voice_{voice.voice}) (Parameter.set 'Duration_Stretch {1 / utterance.rate:.3f})"

            command, stdin = ["text2wave", "-eval", setup, "-o", str(raw_file)], utterance.text
        else:
            command = ["flite", "-voice", voice.voice, "--setf", f"duration_stretch={1 / utterance.rate:.3f}", "-t", utterance.text, "-o", str(raw_file)]  # fmt: skip

        _run(command, stdin)

        shift = ["pitch", str(utterance.pitch_shift_cents)] if utterance.pitch_shift_cents else []

        # Resample to 16 kHz mono 16-bit and trim leading/trailing silence;
        # repeatably (-R), as sox otherwise seeds its dither from the clock.
        _run(["sox", "-R", str(raw_file), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(output_file), *shift, "silence", "1", "0.02", "0.1%", "reverse", "silence", "1", "0.02", "0.1%", "reverse", "pad", "0.1", "0.1"])  # fmt: skip

    return wav_duration(output_file)


def _run(command: list[str], stdin: str | None = None) -> None:
    result = subprocess.run(command, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]

        raise DemoAssetError(f"`{command[0]}` failed ({reason}) while writing the demo corpus.")


def wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as fp:
        return fp.getnframes() / fp.getframerate()
