"""The natural spoken corpus: real English sentences (the usage examples of
WordNet 3.0, Princeton's permissively licensed lexical database, Debian package
``wordnet-base``) spoken by 23 espeak-ng, flite and festival voices, about 20
hours by default (``hours``), with ``train``, ``dev`` and ``test`` splits.

Unlike the template-generated large corpus, its vocabulary is open and no two
sentences share a frame: what a model learns here is listening, not a grammar.
``test`` has sentences *and* voices that ``train`` never has; ``dev`` has
unseen sentences spoken by training voices. ``train_2h``, ``train_8h`` (each
that many hours at the start of ``train``, when ``train`` is longer) are the
steps of a data-scaling curve.

Built once into ``CACHE_DIR/demo/natural_corpus`` (a stamp written last marks
it finished; another plan or size is rebuilt), synthesised by as many engine
processes as there are cores, and registered as the dataset card
``speechmapper_natural_corpus``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from fairseq2_speechmapper.asset_store.card_files import write_card_file
from fairseq2_speechmapper.asset_store.paths import get_cache_dir
from fairseq2_speechmapper.datasets.speech import SPEECH_MANIFEST_FAMILY
from fairseq2_speechmapper.demo.corpus import (
    Utterance,
    Voice,
    normalize_transcript,
    synthesize_corpus,
    varied_utterance,
)
from fairseq2_speechmapper.demo.errors import DemoAssetError
from fairseq2_speechmapper.demo.parts import PartReport, build_part, read_stamp

NATURAL_CORPUS_CARD: Final = "speechmapper_natural_corpus"
"""The dataset card of the natural corpus (``train``, ``dev``, ``test`` and
the ``train_<H>h`` subsets)."""

NATURAL_CORPUS_CARD_FILE_NAME: Final = "natural_corpus.yaml"

DEFAULT_HOURS: Final = 20.0

WORDNET_DIR: Final = Path("/usr/share/wordnet")

# Bumped whenever the sentences, voices, variation or synthesis change, so
# that a corpus built otherwise is rebuilt.
_PLAN_VERSION: Final = 2

_SEED: Final = 2026

NUM_DEV_SENTENCES: Final = 600

NUM_TEST_SENTENCES: Final = 600

SCALING_HOURS: Final = (2.0, 8.0)
"""The ``train_<H>h`` subsets written when ``train`` is longer."""

MIN_WORDS: Final = 5

MAX_WORDS: Final = 16

TRAIN_VOICES: Final = [
    Voice(name="espeak_en_us", engine="espeak-ng", voice="en-us"),
    Voice(name="espeak_en_us_f3", engine="espeak-ng", voice="en-us+f3"),
    Voice(name="espeak_en_us_m7", engine="espeak-ng", voice="en-us+m7"),
    Voice(name="espeak_en_gb_m3", engine="espeak-ng", voice="en-gb+m3"),
    Voice(name="espeak_en_gb_f1", engine="espeak-ng", voice="en-gb+f1"),
    Voice(name="espeak_en_scotland_f2", engine="espeak-ng", voice="en-gb-scotland+f2"),
    Voice(name="espeak_en_scotland_m4", engine="espeak-ng", voice="en-gb-scotland+m4"),
    Voice(name="espeak_en_rp_m1", engine="espeak-ng", voice="en-gb-x-rp+m1"),
    Voice(name="espeak_en_rp_f2", engine="espeak-ng", voice="en-gb-x-rp+f2"),
    Voice(name="espeak_en_lancaster_f4", engine="espeak-ng", voice="en-gb-x-gbclan+f4"),
    Voice(name="espeak_en_lancaster_m2", engine="espeak-ng", voice="en-gb-x-gbclan+m2"),
    Voice(name="espeak_en_caribbean_m2", engine="espeak-ng", voice="en-029+m2"),
    Voice(name="espeak_en_nyc_m5", engine="espeak-ng", voice="en-us-nyc+m5"),
    Voice(name="espeak_en_nyc_f1", engine="espeak-ng", voice="en-us-nyc+f1"),
    Voice(name="flite_kal16", engine="flite", voice="kal16"),
    Voice(name="flite_slt", engine="flite", voice="slt"),
    Voice(name="flite_rms", engine="flite", voice="rms"),
    Voice(name="festival_kal", engine="festival", voice="kal_diphone"),
    Voice(name="festival_slt_hts", engine="festival", voice="cmu_us_slt_arctic_hts"),
]

TEST_VOICES: Final = [
    Voice(name="espeak_en_west_midlands_m6", engine="espeak-ng", voice="en-gb-x-gbcwmd+m6"),
    Voice(name="espeak_en_us_f5", engine="espeak-ng", voice="en-us+f5"),
    Voice(name="flite_awb", engine="flite", voice="awb"),
    Voice(name="festival_ked", engine="festival", voice="ked_diphone"),
]
"""Voices only ``test`` has: an accent (West Midlands), a voice variant, a
flite speaker (Scottish) and a festival speaker that no training voice uses."""

# The speaking time of a sentence, to pick the sentences for ``hours`` before
# synthesis: a least-squares fit to the 22,478 training utterances of the
# first build (mean 2.49 s; espeak-ng 0.33 s per word, flite and festival 0.35).
_SECONDS_PER_WORD: Final = 0.272

_SECONDS_PER_UTTERANCE: Final = 0.435

# Letters, apostrophes, hyphens and sentence punctuation only: digits, symbols
# and abbreviations are read aloud otherwise than they are written.
_SPEAKABLE: Final = re.compile(r"^[A-Za-z][A-Za-z ,.;:'?!-]*$")

_ACRONYM: Final = re.compile(r"[A-Z]{2,}")


def read_wordnet_examples(wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    """Returns the quoted usage examples of the WordNet database in
    ``wordnet_dir`` (``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``),
    in file order.

    :raises DemoAssetError: The database is not installed.
    """
    examples = []

    for pos in ("noun", "verb", "adj", "adv"):
        data_file = wordnet_dir / f"data.{pos}"

        try:
            lines = data_file.read_text(encoding="latin-1").splitlines()
        except OSError:
            raise DemoAssetError(
                f"The natural corpus needs WordNet's {data_file}; run `apt-get install wordnet-base`."
            ) from None

        for line in lines:
            # Lines starting with spaces are the license header; the gloss
            # follows the `|`, its examples in double quotes.
            if line.startswith(" ") or "|" not in line:
                continue

            examples.extend(re.findall(r'"([^"]+)"', line.split("|", 1)[1]))

    return examples


def clean_sentence(text: str) -> str | None:
    """Returns ``text`` as a TTS engine should read it, or ``None`` if it is not
    a speakable sentence of :data:`MIN_WORDS` to :data:`MAX_WORDS` words."""
    text = " ".join(text.replace("`", "'").split()).strip(" ;:,-")

    if not _SPEAKABLE.match(text) or _ACRONYM.search(text) or "--" in text:
        return None

    if not MIN_WORDS <= len(normalize_transcript(text).split()) <= MAX_WORDS:
        return None

    return text


def plan_sentences(examples: Sequence[str]) -> dict[str, list[str]]:
    """Returns the distinct speakable sentences of ``examples`` in a fixed
    random order, split into ``test``, ``dev`` and ``train``; the same for the
    same examples."""
    by_transcript: dict[str, str] = {}

    for example in examples:
        sentence = clean_sentence(example)
        if sentence is not None:
            by_transcript.setdefault(normalize_transcript(sentence), sentence)

    sentences = [by_transcript[transcript] for transcript in sorted(by_transcript)]

    random.Random(_SEED).shuffle(sentences)

    test_end = NUM_TEST_SENTENCES

    dev_end = test_end + NUM_DEV_SENTENCES

    if len(sentences) <= dev_end:
        raise DemoAssetError(f"WordNet gave only {len(sentences)} speakable sentences; {dev_end + 1} are needed.")

    return {"train": sentences[dev_end:], "dev": sentences[test_end:dev_end], "test": sentences[:test_end]}


def estimate_seconds(sentence: str) -> float:
    return _SECONDS_PER_UTTERANCE + _SECONDS_PER_WORD * len(sentence.split())


def plan_natural_corpus(examples: Sequence[str], hours: float = DEFAULT_HOURS) -> list[Utterance]:
    """Decides deterministically who says what, how fast and how high: about
    ``hours`` of ``train`` (each sentence once, then again by another voice if
    ``hours`` needs more), ``dev`` and ``test`` each sentence once; voices taken
    in turn; rate 0.85-1.2, espeak-ng pitch 25-75, flite and festival shifted by
    -200 to +200 cents."""
    if hours <= 0.0:
        raise DemoAssetError(f"The natural corpus needs more than 0 hours of training speech, but {hours} were asked.")

    utterances = []

    for split, sentences in plan_sentences(examples).items():
        voices = TEST_VOICES if split == "test" else TRAIN_VOICES

        if split == "train":
            spoken = _take_hours(sentences, hours * 3600.0)
        else:
            spoken = ((idx, sentence, 0) for idx, sentence in enumerate(sentences))

        for idx, sentence, repeat in spoken:
            # A repeated sentence gets another voice than its earlier takes.
            voice = voices[(idx + repeat * 7) % len(voices)]

            # Seeded per utterance: a corpus of other hours shares its utterances.
            rng = random.Random(f"{_SEED}/{split}/{idx}/{repeat}")

            suffix = f"_r{repeat}" if repeat else ""

            utterance_id = f"{split}_{idx:05d}{suffix}_{voice.name}"

            utterances.append(varied_utterance(rng, id=utterance_id, split=split, text=sentence, voice=voice))

    return utterances


def _take_hours(sentences: Sequence[str], seconds: float) -> Iterator[tuple[int, str, int]]:
    total = 0.0

    for repeat in range(1000):
        for idx, sentence in enumerate(sentences):
            if total >= seconds:
                return

            total += estimate_seconds(sentence)

            yield idx, sentence, repeat


def write_scaling_subsets(corpus_dir: Path, hours: Sequence[float] = SCALING_HOURS) -> dict[str, float]:
    """Writes ``train_<H>h.jsonl``: the first utterances of ``train.jsonl``
    that make ``H`` hours, for each ``H`` shorter than ``train``; returns each
    subset's hours."""
    lines = (corpus_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()

    durations = [float(json.loads(line)["duration"]) for line in lines]

    subsets = {}

    for subset_hours in hours:
        if sum(durations) <= subset_hours * 3600.0:
            continue

        total, end = 0.0, 0
        while total < subset_hours * 3600.0:
            total += durations[end]
            end += 1

        name = f"train_{subset_hours:g}h"

        (corpus_dir / f"{name}.jsonl").write_text("\n".join(lines[:end]) + "\n", encoding="utf-8")

        subsets[name] = total / 3600.0

    return subsets


def build_natural_corpus(
    output_dir: Path | None = None,
    *,
    cards_dir: Path | None = None,
    hours: float = DEFAULT_HOURS,
    num_workers: int | None = None,
) -> tuple[Path, PartReport]:
    """Returns the directory of the natural corpus's manifests and what its
    build took, synthesising it into ``output_dir/demo/natural_corpus`` first
    unless a corpus of this plan and ``hours`` is there (19 minutes for the
    default 20 hours on two cores shared with other jobs; 2.3 GiB), and writes
    its card (:data:`NATURAL_CORPUS_CARD`) into
    ``cards_dir/natural_corpus.yaml``.

    ``output_dir`` defaults to the cache directory, ``cards_dir`` to
    ``output_dir/cards``, ``num_workers`` to the number of cores.

    :raises DemoAssetError: WordNet, a TTS engine or ``sox`` is missing or fails.
    """
    if output_dir is None:
        output_dir = get_cache_dir()

    output_dir = output_dir.expanduser().resolve()

    if cards_dir is None:
        cards_dir = output_dir / "cards"

    if num_workers is None:
        num_workers = os.cpu_count() or 1

    corpus_dir = output_dir / "demo" / "natural_corpus"

    plan_stamp: dict[str, object] = {"plan_version": _PLAN_VERSION, "hours": hours}

    stamp = read_stamp(corpus_dir)
    if stamp and stamp.get("card") != plan_stamp:
        shutil.rmtree(corpus_dir)

    def build(part_dir: Path) -> tuple[str, dict[str, object]]:
        utterances = plan_natural_corpus(read_wordnet_examples(), hours)

        summary = synthesize_corpus(part_dir, utterances, voices=TRAIN_VOICES + TEST_VOICES, num_workers=num_workers)

        subsets = write_scaling_subsets(part_dir)

        num_sentences = len({u.text for u in utterances})

        details = ", ".join(
            f"{split} {summary.num_utterances[split]} utterances / {summary.minutes[split] / 60:.2f} h"
            for split in ("train", "dev", "test")
        )
        details += f"; {num_sentences} distinct sentences; {len(TRAIN_VOICES)} training voices, {len(TEST_VOICES)} test-only voices"
        details += "".join(f"; {name} {subset_hours:.2f} h" for name, subset_hours in subsets.items())

        return details, plan_stamp

    report = build_part(corpus_dir, build)

    card: dict[str, object] = {
        "name": NATURAL_CORPUS_CARD,
        "dataset_family": SPEECH_MANIFEST_FAMILY,
        "dataset_config": {"manifest_dir": str(corpus_dir)},
    }

    write_card_file(cards_dir / NATURAL_CORPUS_CARD_FILE_NAME, [card])

    return corpus_dir, report
