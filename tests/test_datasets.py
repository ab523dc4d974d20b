"""Speech manifests (JSONL and fairseq TSV, with segments), the length-bucketed
reader and its handling of bad input."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch import Tensor

from fairseq2.gang import Gangs, create_fake_gangs

from fairseq2_speechmapper.datasets import (
    BadSampleError,
    ManifestError,
    SpeechBatch,
    SpeechDataReader,
    SpeechManifestDataset,
    SpeechManifestDatasetConfig,
    SpeechReadOptions,
    TextNormalizationConfig,
    TextNormalizer,
    make_length_batches,
    read_manifest,
)
from fairseq2_speechmapper.datasets.reader import padding_fraction
from fairseq2_speechmapper.errors import SpeechMapperError

CPU = torch.device("cpu")


def _ramp(num_samples: int, sample_rate: int = 16_000) -> np.ndarray:
    """A waveform whose samples tell their position (a slow ramp plus noise)."""
    rng = np.random.default_rng(num_samples)

    ramp = np.linspace(-0.5, 0.5, num_samples, dtype=np.float32)

    return ramp + rng.normal(0.0, 0.01, num_samples).astype(np.float32)


def _write_audio(path: Path, seconds: float, *, sample_rate: int = 16_000, channels: int = 1) -> np.ndarray:
    waveform = _ramp(int(seconds * sample_rate), sample_rate)

    data = np.stack([waveform] * channels, axis=1) if channels > 1 else waveform

    path.parent.mkdir(parents=True, exist_ok=True)

    soundfile.write(path, data, sample_rate)

    return waveform


def _write_jsonl(path: Path, entries: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")

    return path


def _identity_input(waveform: Tensor, sample_rate: int) -> Tensor:
    return waveform


def _encode_chars(text: str) -> Tensor:
    return torch.tensor([ord(c) for c in text])


def _read_all(
    dataset: SpeechManifestDataset, split: str, options: SpeechReadOptions, gangs: Gangs | None = None
) -> list[SpeechBatch]:
    reader = dataset.create_reader(
        split,
        gangs or create_fake_gangs(CPU),
        options,
        prepare_input=_identity_input,
        encode_text=_encode_chars,
        training=False,
        seed=1,
    )

    return [batch for batches in reader for batch in batches]


# ---- manifests ----------------------------------------------------------------------


def test_jsonl_manifest_with_relative_paths_segments_and_extra_fields(tmp_path: Path) -> None:
    _write_audio(tmp_path / "audio" / "long.flac", 3.0)

    manifest = _write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"audio_filepath": "audio/long.flac", "duration": 3.0, "text": "Whole file."},
            {
                "audio_filepath": "audio/long.flac",
                "offset": 1.5,
                "duration": 0.5,
                "text": "a segment",
                "id": "seg1",
                "translation": "un segment",
                "tgt_lang": "fr",
            },
        ],
    )

    records = read_manifest(manifest).records

    assert [r.id for r in records] == ["long", "seg1"]
    assert records[0].audio_path == str(tmp_path / "audio" / "long.flac")
    assert (records[1].offset, records[1].duration) == (1.5, 0.5)
    assert records[1].fields == {"translation": "un segment", "tgt_lang": "fr"}
    assert records[1].source == f"{manifest}:2"


def test_fairseq_tsv_manifest_with_words_letters_and_segments(tmp_path: Path) -> None:
    _write_audio(tmp_path / "root" / "a.wav", 1.0)
    _write_audio(tmp_path / "root" / "b.wav", 2.0)

    tsv = tmp_path / "dev.tsv"
    tsv.write_text(f"{tmp_path / 'root'}\na.wav\t16000\nb.wav\t8000\t16000\n", encoding="utf-8")

    (tmp_path / "dev.ltr").write_text("H E L L O |\nW O R L D |\n", encoding="utf-8")

    records = read_manifest(tsv).records

    assert [r.text for r in records] == ["HELLO", "WORLD"]
    assert [r.duration for r in records] == [1.0, 0.5]
    assert [r.offset for r in records] == [0.0, 1.0]
    assert records[1].id == "b@16000"

    (tmp_path / "dev.wrd").write_text("hello there\nworld\n", encoding="utf-8")

    assert [r.text for r in read_manifest(tsv).records] == ["hello there", "world"]


def test_tsv_without_aligned_transcripts_is_refused(tmp_path: Path) -> None:
    _write_audio(tmp_path / "a.wav", 1.0)

    tsv = tmp_path / "dev.tsv"
    tsv.write_text(f"{tmp_path}\na.wav\t16000\n", encoding="utf-8")

    with pytest.raises(ManifestError, match="no transcripts beside the manifest"):
        read_manifest(tsv)

    (tmp_path / "dev.wrd").write_text("one\ntwo\n", encoding="utf-8")

    with pytest.raises(ManifestError, match=r"dev\.wrd: has 2 lines, but dev\.tsv lists 1"):
        read_manifest(tsv)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"duration": 1.0, "text": "x"}, "the `audio_filepath` field is missing"),
        ({"audio_filepath": "a.wav", "text": "x"}, "the `duration` field is missing"),
        ({"audio_filepath": "a.wav", "duration": -1.0, "text": "x"}, "the `duration` field must be a positive number"),
        ({"audio_filepath": "a.wav", "duration": 1.0, "text": "x", "offset": -2}, "the `offset` field must be"),
        ({"audio_filepath": "missing.wav", "duration": 1.0, "text": "x"}, "missing.wav does not exist"),
        ({"audio_filepath": "empty.wav", "duration": 1.0, "text": "x"}, "empty.wav is empty"),
    ],
)
def test_bad_manifest_line_names_file_and_line_or_is_skipped(
    tmp_path: Path, entry: dict[str, object], reason: str
) -> None:
    _write_audio(tmp_path / "a.wav", 1.0)
    (tmp_path / "empty.wav").write_bytes(b"")

    good = {"audio_filepath": "a.wav", "duration": 1.0, "text": "good"}

    manifest = _write_jsonl(tmp_path / "train.jsonl", [good, entry, good])

    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)

    message = str(info.value)

    assert message.startswith(f"{manifest}:2: ") and reason in message
    assert "\n" not in message

    skipped = read_manifest(manifest, on_bad_sample="skip")

    assert (len(skipped.records), skipped.num_skipped) == (2, 1)


def test_split_manifests_are_found_in_a_directory(tmp_path: Path) -> None:
    _write_audio(tmp_path / "a.wav", 1.0)

    for split in ("train", "dev"):
        _write_jsonl(tmp_path / f"{split}.jsonl", [{"audio_filepath": "a.wav", "duration": 1.0, "text": split}])

    dataset = SpeechManifestDataset.from_config(SpeechManifestDatasetConfig(manifest_dir=tmp_path))

    assert dataset.splits == ["dev", "train"]

    with pytest.raises(ManifestError, match="has no `test` split; its splits are dev, train"):
        dataset.manifest_path("test")


def test_text_normalization() -> None:
    normalize = TextNormalizer(TextNormalizationConfig())

    assert normalize("  HELLO,   World! ") == "hello, world!"

    strip = TextNormalizer(TextNormalizationConfig(remove_punctuation=True))

    assert strip("Don't STOP -- 'now', ok?") == "don't stop now ok"


# ---- reading audio --------------------------------------------------------------------


def test_reader_decodes_segments_resamples_and_downmixes(tmp_path: Path) -> None:
    waveform = _write_audio(tmp_path / "long.flac", 2.0)
    _write_audio(tmp_path / "stereo_8k.wav", 1.0, sample_rate=8_000, channels=2)

    manifest = _write_jsonl(
        tmp_path / "dev.jsonl",
        [
            {"audio_filepath": "long.flac", "offset": 0.5, "duration": 0.25, "text": "Segment"},
            {"audio_filepath": "stereo_8k.wav", "duration": 1.0, "text": "other"},
        ],
    )

    dataset = SpeechManifestDataset({"dev": manifest})

    batches = _read_all(dataset, "dev", SpeechReadOptions(sort_window=1))

    examples = {text: (batch, i) for batch in batches for i, text in enumerate(batch.texts)}

    batch, i = examples["segment"]

    segment = batch.inputs[i, : batch.input_lens[i]]

    # FLAC is 16-bit: equal to the written samples up to quantisation.
    assert batch.input_lens[i] == 4000
    assert torch.allclose(segment, torch.from_numpy(waveform[8000:12000]), atol=1e-4)

    assert batch.target_ids[i].tolist() == [ord(c) for c in "segment"]

    batch, i = examples["other"]

    # 8 kHz stereo -> 16 kHz mono.
    assert batch.input_lens[i] == 16_000


@pytest.mark.parametrize(
    ("make_file", "reason"),
    [
        (lambda p: p.write_bytes(b"not audio at all" * 100), "cannot be decoded as audio"),
        (lambda p: _write_audio(p, 0.5), "holds 0.50 s of audio, but the manifest asks for 0.00 s + 1.00 s"),
        (lambda p: _write_audio(p, 1.0, sample_rate=8_000), "is sampled at 8000 Hz, but 16 kHz is expected"),
        (lambda p: _write_audio(p, 1.0, channels=2), "has 2 channels, but mono is expected"),
    ],
)
def test_bad_audio_is_a_one_line_error_or_a_counted_skip(tmp_path: Path, make_file, reason: str) -> None:  # type: ignore[no-untyped-def]
    _write_audio(tmp_path / "good.wav", 1.0)
    make_file(tmp_path / "bad.wav")

    manifest = _write_jsonl(
        tmp_path / "dev.jsonl",
        [
            {"audio_filepath": "good.wav", "duration": 1.0, "text": "good"},
            {"audio_filepath": "bad.wav", "duration": 1.0, "text": "bad"},
        ],
    )

    dataset = SpeechManifestDataset({"dev": manifest})

    with pytest.raises(BadSampleError) as info:
        _read_all(dataset, "dev", SpeechReadOptions(convert_audio=False))

    message = str(info.value)

    assert message.startswith(f"{manifest}:2: {tmp_path / 'bad.wav'}: ") and reason in message
    assert "\n" not in message

    batches = _read_all(dataset, "dev", SpeechReadOptions(convert_audio=False, on_bad_sample="skip"))

    assert [t for b in batches for t in b.texts] == ["good"]
    assert sum(b.num_bad_samples for b in batches) == 1

    # A batch of bad utterances only is dropped, and still counted.
    manifest.write_text("".join(reversed(manifest.read_text().splitlines(keepends=True))), encoding="utf-8")

    options = SpeechReadOptions(convert_audio=False, on_bad_sample="skip", max_batch_size=1, sort_window=1)

    assert [b.num_bad_samples for b in _read_all(dataset, "dev", options)] == [1]


def test_a_prefetched_bad_utterance_leaves_the_reader_state_intact(tmp_path: Path) -> None:
    """The trainer asks for the reader's state at every checkpoint, while the
    prefetcher has already read batches ahead: a bad file among them must not
    fail the checkpoint (fairseq2n raises a failed map function's error again
    from ``state_dict()``), only the step that reads it."""
    for i in range(3):
        _write_audio(tmp_path / f"good_{i}.wav", 1.0)

    (tmp_path / "bad.wav").write_bytes(b"not audio at all" * 100)

    entries = [{"audio_filepath": f"good_{i}.wav", "duration": 1.0, "text": "good"} for i in range(3)]

    manifest = _write_jsonl(
        tmp_path / "dev.jsonl", [*entries, {"audio_filepath": "bad.wav", "duration": 1.0, "text": "bad"}]
    )

    options = SpeechReadOptions(max_batch_size=1, sort_window=1, num_prefetch=4, num_parallel_calls=1)

    def open_reader() -> SpeechDataReader:
        return SpeechManifestDataset({"dev": manifest}).create_reader(
            "dev",
            create_fake_gangs(CPU),
            options,
            prepare_input=_identity_input,
            encode_text=_encode_chars,
            training=False,
            seed=1,
        )

    reader = open_reader()

    next(reader)

    # Time for the prefetcher (a thread) to meet line 4.
    time.sleep(0.5)

    state = reader.state_dict()

    assert len(next(reader)) == len(next(reader)) == 1

    with pytest.raises(BadSampleError, match=f"{manifest}:4: {tmp_path / 'bad.wav'}: cannot be decoded"):
        next(reader)

    # Restored (as on resuming), after the line was fixed: read as it is now.
    manifest.write_text(manifest.read_text().replace("bad.wav", "good_0.wav"), encoding="utf-8")

    fixed = open_reader()

    fixed.load_state_dict(state)

    assert [batch.texts for batches in fixed for batch in batches] == [["good"], ["good"], ["bad"]]


# ---- batching, order and sharding -----------------------------------------------------


def _examples(durations: list[float]) -> list[dict[str, object]]:
    return [{"duration": d, "id": str(i)} for i, d in enumerate(durations)]


def test_length_batches_respect_the_budget_and_bucketing_cuts_padding() -> None:
    rng = np.random.default_rng(0)

    examples = _examples([float(d) for d in rng.uniform(1.0, 20.0, 500)])

    bucketed = make_length_batches(examples, SpeechReadOptions(max_batch_seconds=60.0, sort_window=500))
    unsorted = make_length_batches(examples, SpeechReadOptions(max_batch_seconds=60.0, sort_window=1))

    for batches in (bucketed, unsorted):
        assert sorted(e["id"] for b in batches for e in b) == sorted(e["id"] for e in examples)  # type: ignore[type-var]

        for batch in batches:
            assert len(batch) * max(float(e["duration"]) for e in batch) <= 60.0  # type: ignore[arg-type]

    assert padding_fraction(bucketed) < 0.1 < padding_fraction(unsorted)


def _corpus(tmp_path: Path, num_utterances: int) -> SpeechManifestDataset:
    _write_audio(tmp_path / "a.wav", 0.2)

    entries = [
        {"audio_filepath": "a.wav", "duration": 0.2, "text": f"u{i}", "id": f"u{i}"} for i in range(num_utterances)
    ]

    return SpeechManifestDataset({"train": _write_jsonl(tmp_path / "train.jsonl", entries)})


def _train_reader(
    dataset: SpeechManifestDataset, gangs: Gangs, *, seed: int, batch_shuffle_window: int = 4, sort_window: int = 8
) -> SpeechDataReader:
    return dataset.create_reader(
        "train",
        gangs,
        SpeechReadOptions(max_batch_size=4, sort_window=sort_window, batch_shuffle_window=batch_shuffle_window),
        prepare_input=_identity_input,
        encode_text=_encode_chars,
        training=True,
        seed=seed,
    )


def _passes(reader: SpeechDataReader, num_passes: int) -> list[list[list[str]]]:
    """The batches' ids, pass by pass (the trainer resets the reader between)."""
    passes = []

    for _ in range(num_passes):
        passes.append([batch.ids for batches in reader for batch in batches])

        reader.reset()

    return passes


def test_training_order_is_deterministic_per_seed_and_one_pass_per_data_epoch(tmp_path: Path) -> None:
    dataset = _corpus(tmp_path, 24)

    gangs = create_fake_gangs(CPU)

    first = _passes(_train_reader(dataset, gangs, seed=3), 2)

    assert first == _passes(_train_reader(dataset, gangs, seed=3), 2)
    assert first != _passes(_train_reader(dataset, gangs, seed=4), 2)

    # A data epoch is one pass over the split, in a new order each pass.
    for batches in first:
        assert sorted(i for b in batches for i in b) == sorted(f"u{i}" for i in range(24))

    assert first[0] != first[1]


def test_a_sort_window_larger_than_the_split_never_spans_two_passes(tmp_path: Path) -> None:
    """With the reader repeating inside its pipeline, a window of 400 over a
    split of 10 took 40 passes: batches held copies of one utterance."""
    dataset = _corpus(tmp_path, 10)

    reader = _train_reader(dataset, create_fake_gangs(CPU), seed=1, sort_window=400)

    for batches in _passes(reader, 3):
        assert all(len(set(batch)) == len(batch) for batch in batches)

        assert sorted(i for b in batches for i in b) == sorted(f"u{i}" for i in range(10))


def _read_state(reader: SpeechDataReader) -> list[tuple[list[str], Tensor]]:
    return [(batch.ids, batch.inputs) for batches in reader for batch in batches]


@pytest.mark.parametrize("num_read", [0, 2, 6])
def test_a_restored_reader_reads_exactly_the_remaining_batches(tmp_path: Path, num_read: int) -> None:
    """Restored in a new reader (as on resuming), mid-pass or at a pass's end."""
    dataset = _corpus(tmp_path, 24)

    gangs = create_fake_gangs(CPU)

    reader = _train_reader(dataset, gangs, seed=3)

    # Into the second pass (6 batches a pass), the prefetcher ahead.
    reader.reset()

    for _ in range(num_read):
        next(reader)

    time.sleep(0.2)

    state = reader.state_dict()

    expected = _read_state(reader)
    reader.reset()
    expected_next_pass = _read_state(reader)

    restored = _train_reader(dataset, gangs, seed=3)

    restored.load_state_dict(state)

    remaining = _read_state(restored)
    restored.reset()
    next_pass = _read_state(restored)

    assert len(remaining) == 6 - num_read

    for (ids, inputs), (expected_ids, expected_inputs) in zip(
        remaining + next_pass, expected + expected_next_pass, strict=True
    ):
        assert ids == expected_ids
        assert torch.equal(inputs, expected_inputs)


def test_the_reader_state_is_a_position_not_the_prefetched_batches(tmp_path: Path) -> None:
    """fairseq2n's pipeline state holds the prefetched, decoded batches (tens
    to hundreds of MB a checkpoint at the paper's shapes); the reader's does not."""
    dataset = _corpus(tmp_path, 24)

    reader = _train_reader(dataset, create_fake_gangs(CPU), seed=3)

    next(reader)

    time.sleep(0.2)

    assert reader.state_dict() == {"pass_nr": 0, "num_read": 1}

    assert len(pickle.dumps(reader.state_dict())) < 100

    with pytest.raises(SpeechMapperError, match="written by an older fairseq2-speechmapper"):
        reader.load_state_dict({"pipeline": b"..."})
