"""The large demo speech corpus: about 2.5 hours of self-written sentences
(:mod:`~fairseq2_speechmapper.demo.sentence_grammar` plus the small corpus's
sentences) spoken by 16 espeak-ng and flite voices, with ``train``, ``dev`` and
``test`` splits. ``test`` has sentences *and* voices that ``train`` never has;
``dev`` has unseen sentences spoken by training voices.

It is synthesised by the same code as the small demo corpus
(:func:`~fairseq2_speechmapper.demo.corpus.synthesize_corpus`), built once into
``CACHE_DIR/demo/large_corpus`` (a stamp file written last marks it finished)
and registered as the dataset card ``speechmapper_large_corpus``.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Final

from fairseq2_speechmapper.asset_store.card_files import write_card_file
from fairseq2_speechmapper.asset_store.paths import get_cache_dir
from fairseq2_speechmapper.datasets.speech import SPEECH_MANIFEST_FAMILY
from fairseq2_speechmapper.demo.corpus import (
    VOICES,
    Utterance,
    Voice,
    normalize_transcript,
    synthesize_corpus,
    varied_utterance,
)
from fairseq2_speechmapper.demo.parts import PartReport, build_part, read_stamp
from fairseq2_speechmapper.demo.sentence_grammar import generate_sentences
from fairseq2_speechmapper.demo.sentences import SENTENCES

LARGE_CORPUS_CARD: Final = "speechmapper_large_corpus"
"""The dataset card of the large corpus (``train``, ``dev`` and ``test`` splits)."""

LARGE_CORPUS_CARD_FILE_NAME: Final = "large_corpus.yaml"

# Bumped whenever the plan (sentences, voices, variation) or the synthesis
# changes, so that a corpus built otherwise is rebuilt.
_PLAN_VERSION: Final = 2

_SEED: Final = 2024

# Generated sentences; with the small corpus's 200 that makes 3,060 distinct ones.
NUM_GENERATED_SENTENCES: Final = 2860

# Of every 11 generated sentences, one goes to dev and one to test.
_SPLIT_CYCLE: Final = 11

_DEV_SLOT: Final = 8

_TEST_SLOT: Final = 3

_SMALL_CORPUS_VOICES: Final = {voice.name: voice for voice in VOICES}

TRAIN_VOICES: Final = [
    _SMALL_CORPUS_VOICES["espeak_en_us"],
    _SMALL_CORPUS_VOICES["espeak_en_gb_m3"],
    _SMALL_CORPUS_VOICES["espeak_en_us_f3"],
    _SMALL_CORPUS_VOICES["espeak_en_scotland_f2"],
    _SMALL_CORPUS_VOICES["espeak_en_rp_m1"],
    Voice(name="espeak_en_caribbean_m2", engine="espeak-ng", voice="en-029+m2"),
    Voice(name="espeak_en_lancaster_f4", engine="espeak-ng", voice="en-gb-x-gbclan+f4"),
    Voice(name="espeak_en_nyc_m5", engine="espeak-ng", voice="en-us-nyc+m5"),
    Voice(name="espeak_en_gb_f1", engine="espeak-ng", voice="en-gb+f1"),
    Voice(name="espeak_en_us_m7", engine="espeak-ng", voice="en-us+m7"),
    _SMALL_CORPUS_VOICES["flite_kal16"],
    _SMALL_CORPUS_VOICES["flite_slt"],
    _SMALL_CORPUS_VOICES["flite_rms"],
]

TEST_VOICES: Final = [
    Voice(name="espeak_en_west_midlands_m6", engine="espeak-ng", voice="en-gb-x-gbcwmd+m6"),
    Voice(name="espeak_en_us_f5", engine="espeak-ng", voice="en-us+f5"),
    _SMALL_CORPUS_VOICES["flite_awb"],
]
"""Voices only the ``test`` split has: a West Midlands accent and a voice
variant that no training voice uses, and a flite speaker of its own."""


def plan_sentences() -> dict[str, list[str]]:
    """The sentences of each split, the same on every call."""
    small_corpus = list(dict.fromkeys(SENTENCES))

    generated = generate_sentences(
        NUM_GENERATED_SENTENCES, seed=_SEED, exclude={normalize_transcript(s) for s in small_corpus}
    )

    splits: dict[str, list[str]] = {"train": [], "dev": [], "test": []}

    for idx, sentence in enumerate(generated):
        slot = idx % _SPLIT_CYCLE

        split = "test" if slot == _TEST_SLOT else "dev" if slot == _DEV_SLOT else "train"

        splits[split].append(sentence)

    splits["train"].extend(small_corpus)

    return splits


def plan_large_corpus() -> list[Utterance]:
    """Decides deterministically who says what, how fast and how high: each
    sentence once, by a training voice (``train``, ``dev``) or a test voice
    (``test``), taken in turn; rate 0.85-1.2, espeak-ng pitch 25-75, flite
    shifted by -200 to +200 cents."""
    rng = random.Random(_SEED)

    utterances = []

    for split, sentences in plan_sentences().items():
        voices = TEST_VOICES if split == "test" else TRAIN_VOICES

        for idx, sentence in enumerate(sentences):
            voice = voices[idx % len(voices)]

            utterances.append(
                varied_utterance(rng, id=f"{split}_{idx:04d}_{voice.name}", split=split, text=sentence, voice=voice)
            )

    return utterances


def make_large_corpus(output_dir: Path | None = None, *, cards_dir: Path | None = None, num_workers: int = 2) -> Path:
    """Returns the directory of the large corpus's manifests
    (``train.jsonl``, ``dev.jsonl``, ``test.jsonl``), synthesising it into
    ``output_dir/demo/large_corpus`` first if it is not there (a few minutes on
    two cores; instant afterwards), and writes its card
    (:data:`LARGE_CORPUS_CARD`) into ``cards_dir/large_corpus.yaml``.

    ``output_dir`` defaults to the cache directory and ``cards_dir`` to
    ``output_dir/cards``, where the package's fairseq2 extension finds cards.

    :raises DemoAssetError: A TTS engine or ``sox`` is missing or fails.
    """
    return build_large_corpus(output_dir, cards_dir=cards_dir, num_workers=num_workers)[0]


def build_large_corpus(
    output_dir: Path | None = None, *, cards_dir: Path | None = None, num_workers: int = 2
) -> tuple[Path, PartReport]:
    """:func:`make_large_corpus`, also returning what the build took."""
    if output_dir is None:
        output_dir = get_cache_dir()

    output_dir = output_dir.expanduser().resolve()

    if cards_dir is None:
        cards_dir = output_dir / "cards"

    corpus_dir = output_dir / "demo" / "large_corpus"

    stamp = read_stamp(corpus_dir)
    if stamp and stamp.get("card") != {"plan_version": _PLAN_VERSION}:
        shutil.rmtree(corpus_dir)

    def build(part_dir: Path) -> tuple[str, dict[str, object]]:
        summary = synthesize_corpus(part_dir, plan_large_corpus(), voices=TRAIN_VOICES + TEST_VOICES, num_workers=num_workers)  # fmt: skip

        details = ", ".join(
            f"{split} {summary.num_utterances[split]} utterances / {summary.minutes[split] / 60:.2f} h"
            for split in ("train", "dev", "test")
        )
        details += f"; {len(TRAIN_VOICES)} training voices, {len(TEST_VOICES)} test-only voices"

        # Stored in the stamp to tell a corpus of another plan.
        return details, {"plan_version": _PLAN_VERSION}

    report = build_part(corpus_dir, build)

    card: dict[str, object] = {
        "name": LARGE_CORPUS_CARD,
        "dataset_family": SPEECH_MANIFEST_FAMILY,
        "dataset_config": {"manifest_dir": str(corpus_dir)},
    }

    write_card_file(cards_dir / LARGE_CORPUS_CARD_FILE_NAME, [card])

    return corpus_dir, report
