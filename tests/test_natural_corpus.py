from __future__ import annotations

import json
import re
import wave
from collections import Counter
from pathlib import Path

import pytest
import yaml

from fairseq2_speechmapper.demo.corpus import CorpusSummary, normalize_transcript, synthesize_corpus
from fairseq2_speechmapper.demo.errors import DemoAssetError
from fairseq2_speechmapper.demo.natural_corpus import (
    NATURAL_CORPUS_CARD,
    NUM_TEST_SENTENCES,
    TEST_VOICES,
    TRAIN_VOICES,
    WORDNET_DIR,
    build_natural_corpus,
    clean_sentence,
    estimate_seconds,
    plan_natural_corpus,
    read_wordnet_examples,
    write_scaling_subsets,
)

needs_wordnet = pytest.mark.skipif(
    not (WORDNET_DIR / "data.noun").exists(), reason="WordNet (Debian wordnet-base) is not installed"
)


@pytest.fixture(scope="module")
def examples() -> list[str]:
    if not (WORDNET_DIR / "data.noun").exists():
        pytest.skip("WordNet (Debian wordnet-base) is not installed")

    return read_wordnet_examples()


@pytest.fixture(scope="module")
def plan(examples: list[str]) -> list:
    return plan_natural_corpus(examples, 20.0)


def _by_split(plan: list) -> dict[str, list]:
    splits: dict[str, list] = {}
    for utterance in plan:
        splits.setdefault(utterance.split, []).append(utterance)

    return splits


def test_twenty_hours_of_distinct_natural_sentences_by_many_voices(plan: list) -> None:
    splits = _by_split(plan)

    train_hours = sum(estimate_seconds(u.text) for u in splits["train"]) / 3600.0

    assert 19.5 < train_hours < 20.5

    assert len({normalize_transcript(u.text) for u in plan}) >= 15_000

    assert len(TRAIN_VOICES) + len(TEST_VOICES) >= 20
    assert {u.voice.name for u in plan} == {v.name for v in TRAIN_VOICES + TEST_VOICES}
    assert {v.engine for v in TRAIN_VOICES} == {"espeak-ng", "flite", "festival"}

    # No shared sentence frames, as a template corpus has: most sentences open
    # with three words of their own, and no opening is frequent.
    openings = Counter(tuple(normalize_transcript(u.text).split()[:3]) for u in splits["train"])
    assert len(openings) > 0.6 * len(splits["train"])
    assert openings.most_common(1)[0][1] < 0.01 * len(splits["train"])

    vocabulary = {word for u in splits["train"] for word in normalize_transcript(u.text).split()}
    assert len(vocabulary) > 15_000


def test_test_split_has_unseen_sentences_and_voices(plan: list) -> None:
    splits = _by_split(plan)

    sentences = {split: {normalize_transcript(u.text) for u in us} for split, us in splits.items()}
    voices = {split: {u.voice.name for u in us} for split, us in splits.items()}

    assert len(sentences["test"]) == NUM_TEST_SENTENCES

    assert not sentences["test"] & sentences["train"]
    assert not sentences["dev"] & sentences["train"]
    assert not sentences["test"] & sentences["dev"]

    assert not voices["test"] & voices["train"]
    assert voices["dev"] <= voices["train"]


def test_plan_is_deterministic_and_grows_with_hours(examples: list[str], plan: list) -> None:
    again = plan_natural_corpus(examples, 20.0)

    assert [(u.id, u.text, u.rate, u.pitch, u.pitch_shift_cents) for u in again] == [
        (u.id, u.text, u.rate, u.pitch, u.pitch_shift_cents) for u in plan
    ]

    def takes(utterances: list) -> list[tuple]:
        return [(u.id, u.text, u.voice.name, u.rate, u.pitch, u.pitch_shift_cents) for u in utterances]

    small = plan_natural_corpus(examples, 2.0)

    # The smaller corpus is the start of the larger one, with the same dev and test.
    small_train = takes([u for u in small if u.split == "train"])

    assert small_train == takes([u for u in plan if u.split == "train"])[: len(small_train)]
    assert takes([u for u in small if u.split != "train"]) == takes([u for u in plan if u.split != "train"])

    # More hours than sentences: sentences come back with other voices.
    huge = [u for u in plan_natural_corpus(examples, 40.0) if u.split == "train"]

    repeated = [u for u in huge if re.search(r"_r1_", u.id)]
    assert repeated

    first_takes = {u.text: u.voice.name for u in huge if not re.search(r"_r[0-9]+_", u.id)}
    assert all(first_takes[u.text] != u.voice.name for u in repeated)

    with pytest.raises(DemoAssetError, match="more than 0 hours"):
        plan_natural_corpus(examples, 0.0)


def test_sentences_are_cleaned_for_speech() -> None:
    assert (
        clean_sentence("  the  pillar stood alone, supporting nothing ") == "the pillar stood alone, supporting nothing"
    )

    # Digits, symbols, acronyms, too short or too long: read otherwise than written.
    assert clean_sentence("he was born in 1990 in Paris") is None
    assert clean_sentence("the FBI opened a file on him") is None
    assert clean_sentence("profits rose by 5% this year") is None
    assert clean_sentence("a good day") is None
    assert clean_sentence(" ".join(["word"] * 17)) is None


def test_missing_wordnet_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DemoAssetError, match="apt-get install wordnet-base"):
        read_wordnet_examples(tmp_path)


def test_scaling_subsets_are_prefixes_of_train(tmp_path: Path) -> None:
    lines = [json.dumps({"id": f"u{i}", "duration": 100.0}) for i in range(200)]

    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    subsets = write_scaling_subsets(tmp_path, (2.0, 8.0))

    # 200 x 100 s = 5.6 h: only the 2-hour subset is shorter than train.
    assert list(subsets) == ["train_2h"]
    assert subsets["train_2h"] == pytest.approx(2.0, abs=0.03)

    subset_lines = (tmp_path / "train_2h.jsonl").read_text(encoding="utf-8").splitlines()

    assert subset_lines == lines[:72]


@needs_wordnet
def test_card_and_cached_corpus_are_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_synthesize(corpus_dir: Path, utterances: list, **kwargs: object) -> CorpusSummary:
        calls.append(len(utterances))

        (corpus_dir / "train.jsonl").write_text(json.dumps({"id": "a", "duration": 3.0}) + "\n", encoding="utf-8")

        return CorpusSummary(
            num_utterances={s: 1 for s in ("train", "dev", "test")},
            minutes={s: 1.0 for s in ("train", "dev", "test")},
            voices=[],
        )

    monkeypatch.setattr("fairseq2_speechmapper.demo.natural_corpus.synthesize_corpus", fake_synthesize)

    corpus_dir, report = build_natural_corpus(tmp_path, hours=1.0)

    assert corpus_dir == tmp_path.resolve() / "demo" / "natural_corpus"
    assert report.built_now

    with (tmp_path / "cards" / "natural_corpus.yaml").open(encoding="utf-8") as fp:
        (card,) = yaml.safe_load_all(fp)

    assert card["name"] == NATURAL_CORPUS_CARD
    assert card["dataset_config"] == {"manifest_dir": str(corpus_dir)}

    assert not build_natural_corpus(tmp_path, hours=1.0)[1].built_now
    assert len(calls) == 1

    # Another size is another corpus.
    build_natural_corpus(tmp_path, hours=2.0)

    assert len(calls) == 2 and calls[1] > calls[0]


@needs_wordnet
@pytest.mark.slow
def test_every_voice_speaks(tmp_path: Path, plan: list) -> None:
    # One utterance of every voice in every split.
    subset = list({(u.split, u.voice.name): u for u in reversed(plan)}.values())

    summary = synthesize_corpus(tmp_path, subset, voices=TRAIN_VOICES + TEST_VOICES)

    assert sum(summary.num_utterances.values()) == len(subset)

    for split in ("train", "dev", "test"):
        for line in (tmp_path / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)

            with wave.open(str(tmp_path / entry["audio_filepath"]), "rb") as fp:
                assert (fp.getframerate(), fp.getnchannels(), fp.getsampwidth()) == (16_000, 1, 2)

                duration = fp.getnframes() / 16_000

            # About what the plan estimated: the engine spoke the sentence.
            assert 0.4 < duration / estimate_seconds(entry["text"]) < 2.5, entry
