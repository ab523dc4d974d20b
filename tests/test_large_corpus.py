from __future__ import annotations

import json
import re
import wave
from collections import Counter
from pathlib import Path

import pytest
import yaml

from fairseq2_speechmapper.demo import LARGE_CORPUS_CARD
from fairseq2_speechmapper.demo.corpus import normalize_transcript, synthesize_corpus
from fairseq2_speechmapper.demo.large_corpus import (
    TEST_VOICES,
    TRAIN_VOICES,
    make_large_corpus,
    plan_large_corpus,
    plan_sentences,
)
from fairseq2_speechmapper.demo.sentence_grammar import (
    MAX_WORDS,
    MIN_WORDS,
    generate_sentences,
    number_to_words,
    vocabulary_size,
)


@pytest.fixture(scope="module")
def plan() -> list:
    return plan_large_corpus()


def _by_split(plan: list) -> dict[str, list]:
    splits: dict[str, list] = {}
    for utterance in plan:
        splits.setdefault(utterance.split, []).append(utterance)

    return splits


def test_plan_has_enough_sentences_and_voices(plan: list) -> None:
    transcripts = {normalize_transcript(u.text) for u in plan}

    assert len(transcripts) >= 3000
    assert len(transcripts) == len(plan), "each sentence is spoken once"

    assert len({u.voice.name for u in plan}) >= 12
    assert {v.engine for v in TEST_VOICES} == {"espeak-ng", "flite"}

    assert set(_by_split(plan)) == {"train", "dev", "test"}


def test_test_split_has_unseen_sentences_and_voices(plan: list) -> None:
    splits = _by_split(plan)

    sentences = {split: {normalize_transcript(u.text) for u in us} for split, us in splits.items()}
    voices = {split: {u.voice.name for u in us} for split, us in splits.items()}

    assert not sentences["test"] & sentences["train"]
    assert not sentences["dev"] & sentences["train"]
    assert not sentences["dev"] & sentences["test"]

    assert not voices["test"] & voices["train"]
    assert voices["test"] == {v.name for v in TEST_VOICES}
    assert voices["dev"] <= voices["train"] == {v.name for v in TRAIN_VOICES}

    # Mostly train; dev and test a few hundred utterances each.
    assert len(splits["train"]) > 0.8 * len(plan)
    assert 200 <= len(splits["dev"]) <= 400
    assert 200 <= len(splits["test"]) <= 400


def test_plan_is_deterministic(plan: list) -> None:
    assert plan_large_corpus() == plan
    assert generate_sentences(50, seed=3) == generate_sentences(50, seed=3)
    assert generate_sentences(50, seed=3) != generate_sentences(50, seed=4)


def test_rate_and_pitch_vary(plan: list) -> None:
    assert len({u.rate for u in plan}) >= 5
    assert len({u.pitch for u in plan if u.voice.engine == "espeak-ng"}) >= 5
    assert len({u.pitch_shift_cents for u in plan if u.voice.engine == "flite"}) >= 5

    assert all(0.8 <= u.rate <= 1.25 for u in plan)


def test_sentences_are_varied_and_need_no_normalisation() -> None:
    sentences = [s for split in plan_sentences().values() for s in split]

    word_counts = [len(normalize_transcript(s).split()) for s in sentences]

    assert min(word_counts) >= MIN_WORDS
    assert max(word_counts) <= MAX_WORDS
    assert 8 <= sum(word_counts) / len(word_counts) <= 12

    assert 800 <= vocabulary_size(sentences) <= 2000

    for sentence in sentences:
        assert not re.search(r"[0-9]", sentence), sentence
        assert re.fullmatch(r"[a-z']+( [a-z']+)*", normalize_transcript(sentence)), sentence

    # No sentence frame dominates: the most common first three words cover a few percent at most.
    openings = Counter(" ".join(normalize_transcript(s).split()[:3]) for s in sentences)
    assert openings.most_common(1)[0][1] < 0.05 * len(sentences)


def test_number_to_words() -> None:
    assert number_to_words(7) == "seven"
    assert number_to_words(42) == "forty-two"
    assert number_to_words(300) == "three hundred"
    assert number_to_words(115) == "one hundred and fifteen"


def test_card_and_cached_corpus_are_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_synthesize(corpus_dir: Path, utterances: list, **kwargs: object) -> object:
        from fairseq2_speechmapper.demo.corpus import CorpusSummary

        calls.append(len(utterances))

        (corpus_dir / "train.jsonl").write_text("", encoding="utf-8")

        return CorpusSummary(
            num_utterances={s: 1 for s in ("train", "dev", "test")},
            minutes={s: 1.0 for s in ("train", "dev", "test")},
            voices=[],
        )

    monkeypatch.setattr("fairseq2_speechmapper.demo.large_corpus.synthesize_corpus", fake_synthesize)

    corpus_dir = make_large_corpus(tmp_path)

    assert corpus_dir == tmp_path.resolve() / "demo" / "large_corpus"
    assert (corpus_dir / "DONE.json").exists()

    with (tmp_path / "cards" / "large_corpus.yaml").open(encoding="utf-8") as fp:
        (card,) = yaml.safe_load_all(fp)

    assert card["name"] == LARGE_CORPUS_CARD
    assert card["dataset_config"] == {"manifest_dir": str(corpus_dir)}

    assert make_large_corpus(tmp_path) == corpus_dir
    assert len(calls) == 1

    # An interrupted build (no stamp) is redone.
    (corpus_dir / "DONE.json").unlink()

    make_large_corpus(tmp_path)

    assert len(calls) == 2


@pytest.mark.slow
def test_synthesises_a_subset(tmp_path: Path, plan: list) -> None:
    # One utterance of every voice in every split.
    subset = list({(u.split, u.voice.name): u for u in reversed(plan)}.values())

    summary = synthesize_corpus(tmp_path, subset, voices=TRAIN_VOICES + TEST_VOICES)

    assert sum(summary.num_utterances.values()) == len(subset)

    for split in ("train", "dev", "test"):
        for line in (tmp_path / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)

            assert {"id", "audio_filepath", "duration", "text", "speaker", "voice"} <= entry.keys()
            assert re.fullmatch(r"[a-z0-9']+( [a-z0-9']+)*", entry["text"])

            with wave.open(str(tmp_path / entry["audio_filepath"]), "rb") as fp:
                assert (fp.getframerate(), fp.getnchannels(), fp.getsampwidth()) == (16_000, 1, 2)

                duration = fp.getnframes() / 16_000

            assert abs(duration - entry["duration"]) < 1e-3
            assert 1.0 < duration < 10.0

    # The same files on every build.
    synthesize_corpus(tmp_path / "again", subset[:4], voices=TRAIN_VOICES + TEST_VOICES)

    for utterance in subset[:4]:
        path = Path("audio") / utterance.split / f"{utterance.id}.wav"

        assert (tmp_path / path).read_bytes() == (tmp_path / "again" / path).read_bytes()
