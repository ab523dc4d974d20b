from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from fairseq2_speechmapper.cli.errors import CommandError
from fairseq2_speechmapper.cli.main import main
from fairseq2_speechmapper.cli.prepare import run_prepare
from fairseq2_speechmapper.datasets.manifest import read_manifest
from fairseq2_speechmapper.prepare.manifest import libsndfile_reads

PROG = "fairseq2 speechmapper prepare"

SAMPLE_RATE = 16_000


def _write_audio(path: Path, num_frames: int, sample_rate: int = SAMPLE_RATE, **kwargs: object) -> float:
    """Writes a bit of noise; returns its duration as libsndfile reads it back."""
    path.parent.mkdir(parents=True, exist_ok=True)

    noise = np.random.default_rng(num_frames).normal(scale=0.1, size=num_frames).astype(np.float32)

    soundfile.write(path, noise, sample_rate, **kwargs)  # type: ignore[arg-type]

    info = soundfile.info(str(path))

    return float(info.frames / info.samplerate)


def _read_manifest(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# LibriSpeech ------------------------------------------------------------------

# One speaker and chapter per subset: (speaker, chapter).
_LIBRISPEECH_SPEAKERS = {
    "train-clean-100": ("103", "1240"),
    "train-clean-360": ("100", "121669"),
    "train-other-500": ("1006", "135212"),
    "dev-clean": ("84", "121123"),
}


def _make_librispeech(root: Path, subsets: tuple[str, ...] = tuple(_LIBRISPEECH_SPEAKERS)) -> dict[str, float]:
    """Writes ``root/LibriSpeech/<subset>/...`` with two FLAC utterances per
    subset; returns their durations by id."""
    durations = {}

    for subset_index, subset in enumerate(subsets):
        speaker, chapter = _LIBRISPEECH_SPEAKERS[subset]

        chapter_dir = root / "LibriSpeech" / subset / speaker / chapter

        lines = []

        for utterance_nr in range(2):
            utterance_id = f"{speaker}-{chapter}-{utterance_nr:04d}"

            durations[utterance_id] = _write_audio(
                chapter_dir / f"{utterance_id}.flac", num_frames=1600 * (subset_index + 2) + 37 * utterance_nr
            )

            lines.append(f"{utterance_id} CHAPTER {subset_index} UTTERANCE {utterance_nr}\n")

        (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines), encoding="utf-8")

    return durations


def test_librispeech_writes_each_subset_and_the_train_960_union(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    durations = _make_librispeech(tmp_path / "corpus")

    out_dir = tmp_path / "out"

    # The parent of LibriSpeech/ as ROOT: the subsets are found below it.
    assert run_prepare(PROG, ["librispeech", str(tmp_path / "corpus"), str(out_dir), "--num-threads", "3"]) == 0

    assert sorted(p.name for p in out_dir.iterdir()) == [
        "dev-clean.jsonl",
        "train-960.jsonl",
        "train-clean-100.jsonl",
        "train-clean-360.jsonl",
        "train-other-500.jsonl",
    ]

    dev = _read_manifest(out_dir / "dev-clean.jsonl")

    chapter_dir = tmp_path / "corpus" / "LibriSpeech" / "dev-clean" / "84" / "121123"

    assert dev == [
        {
            "audio_filepath": str(chapter_dir / f"84-121123-{nr:04d}.flac"),
            "duration": durations[f"84-121123-{nr:04d}"],
            "text": f"CHAPTER 3 UTTERANCE {nr}",
            "id": f"84-121123-{nr:04d}",
            "lang": "en",
            "speaker": "84",
        }
        for nr in range(2)
    ]

    assert dev[0]["duration"] == 1600 * 5 / SAMPLE_RATE

    train_subsets = ["train-clean-100", "train-clean-360", "train-other-500"]

    union = [entry for subset in train_subsets for entry in _read_manifest(out_dir / f"{subset}.jsonl")]

    assert _read_manifest(out_dir / "train-960.jsonl") == union
    assert [entry["id"] for entry in union] == [f"103-1240-000{n}" for n in range(2)] + [
        f"100-121669-000{n}" for n in range(2)
    ] + [f"1006-135212-000{n}" for n in range(2)]

    for entry in union:
        assert Path(str(entry["audio_filepath"])).is_absolute()
        assert entry["duration"] == durations[str(entry["id"])]

    printed = capsys.readouterr().out

    train_960_line = next(line for line in printed.splitlines() if line.startswith("train-960"))

    hours = sum(durations[str(e["id"])] for e in union) / 3600

    assert "6 utterances" in train_960_line and f"{hours:.2f} h" in train_960_line and "skipped 0" in train_960_line


def test_librispeech_without_every_train_subset_writes_no_train_960(tmp_path: Path) -> None:
    _make_librispeech(tmp_path, subsets=("train-clean-100", "dev-clean"))

    out_dir = tmp_path / "out"

    # ROOT is the LibriSpeech directory itself.
    run_prepare(PROG, ["librispeech", str(tmp_path / "LibriSpeech"), str(out_dir)])

    assert sorted(p.name for p in out_dir.iterdir()) == ["dev-clean.jsonl", "train-clean-100.jsonl"]


def test_malformed_transcript_line_names_the_file_and_line(tmp_path: Path) -> None:
    _make_librispeech(tmp_path, subsets=("dev-clean",))

    trans_file = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123" / "84-121123.trans.txt"

    lines = trans_file.read_text().splitlines()

    trans_file.write_text(f"{lines[0]}\n84-121123-0001\n")

    with pytest.raises(CommandError, match=f"^{trans_file}:2: malformed transcript line '84-121123-0001'"):
        run_prepare(PROG, ["librispeech", str(tmp_path), str(tmp_path / "out")])


def test_missing_audio_fails_naming_the_file_unless_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _make_librispeech(tmp_path, subsets=("dev-clean",))

    missing_file = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123" / "84-121123-0001.flac"

    missing_file.unlink()

    out_dir = tmp_path / "out"

    with pytest.raises(CommandError) as error:
        run_prepare(PROG, ["librispeech", str(tmp_path), str(out_dir)])

    assert str(error.value).startswith(f"{missing_file}: the audio file is missing (listed in ")
    assert "84-121123.trans.txt:2" in str(error.value) and "\n" not in str(error.value)

    capsys.readouterr()

    assert run_prepare(PROG, ["librispeech", str(tmp_path), str(out_dir), "--skip-missing"]) == 0

    assert [e["id"] for e in _read_manifest(out_dir / "dev-clean.jsonl")] == ["84-121123-0000"]

    dev_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("dev-clean"))

    assert " 1 utterances" in dev_line and "skipped 1 (missing audio: 1)" in dev_line


def test_command_line_prepares_librispeech(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _make_librispeech(tmp_path, subsets=("dev-clean",))

    (tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123" / "84-121123-0000.flac").unlink()

    out_dir = tmp_path / "out"

    # In process: the console script itself costs seconds of imports (test_cli runs it).
    with pytest.raises(SystemExit) as exit_info:
        main(["speechmapper", "prepare", "librispeech", str(tmp_path), str(out_dir), "--skip-missing"])

    assert exit_info.value.code == 0

    (dev_line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("dev-clean")]

    assert " 1 utterances" in dev_line and "skipped 1 (missing audio: 1)" in dev_line
    assert dev_line.endswith(f"-> {out_dir / 'dev-clean.jsonl'}")

    assert [e["id"] for e in _read_manifest(out_dir / "dev-clean.jsonl")] == ["84-121123-0001"]


def test_errors_are_one_line_through_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["speechmapper", "prepare", "librispeech", str(tmp_path / "nowhere"), str(tmp_path / "out")])

    # A user error (a SpeechMapperError): exit 2, as fairseq2's recipe CLI reports them.
    assert exit_info.value.code == 2

    stderr = capsys.readouterr().err

    assert stderr == f"error: {tmp_path / 'nowhere'}: the LibriSpeech root does not exist or is not a directory.\n"


# Common Voice and CoVoST 2 --------------------------------------------------------

# The columns of a Common Voice release's TSV files (17.0).
_CV_HEADER = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"

# Bare quotes, as Common Voice writes them (no CSV quoting).
_CV_SENTENCES = {
    "common_voice_en_1.mp3": 'He said "hello" twice.',
    "common_voice_en_2.mp3": "It's fine.",
    "common_voice_en_3.mp3": "A third clip.",
    "common_voice_en_4.mp3": "Only in CoVoST's train_covost.",
}


def _make_common_voice(root: Path) -> dict[str, float]:
    """Writes ``root/en`` with MP3 clips and its split TSVs: clip 1 in train,
    2 in dev, 3 in test, 4 only in validated.tsv; returns the durations by clip."""
    lang_dir = root / "en"

    durations = {}

    rows = {}

    for nr, (clip, sentence) in enumerate(_CV_SENTENCES.items(), start=1):
        # 48 kHz MP3 as Common Voice's clips.
        durations[clip] = _write_audio(lang_dir / "clips" / clip, num_frames=48_000 // 4 * nr, sample_rate=48_000)

        rows[clip] = f"client{nr}\t{clip}\tsid{nr}\t{sentence}\t\t2\t0\t\t\t\t\ten\t"

    split_clips = {
        "train": ["common_voice_en_1.mp3"],
        "dev": ["common_voice_en_2.mp3"],
        "test": ["common_voice_en_3.mp3"],
        "validated": list(_CV_SENTENCES),
    }

    for split, clips in split_clips.items():
        (lang_dir / f"{split}.tsv").write_text(
            "\n".join([_CV_HEADER, *(rows[c] for c in clips)]) + "\n", encoding="utf-8"
        )

    return durations


def test_common_voice_writes_asr_manifests_with_mp3_durations(tmp_path: Path) -> None:
    durations = _make_common_voice(tmp_path)

    out_dir = tmp_path / "out"

    run_prepare(PROG, ["commonvoice", str(tmp_path / "en"), str(out_dir), "--splits", "train", "validated"])

    assert sorted(p.name for p in out_dir.iterdir()) == ["train.jsonl", "validated.jsonl"]

    (train,) = _read_manifest(out_dir / "train.jsonl")

    assert train == {
        "audio_filepath": str(tmp_path / "en" / "clips" / "common_voice_en_1.mp3"),
        "duration": durations["common_voice_en_1.mp3"],
        "text": 'He said "hello" twice.',
        "id": "common_voice_en_1",
        "lang": "en",
        "speaker": "client1",
    }

    # The MP3 header (LAME's Xing/Info frame) gives the exact length.
    assert train["duration"] == pytest.approx(0.25, abs=1e-6)

    assert [e["text"] for e in _read_manifest(out_dir / "validated.jsonl")] == list(_CV_SENTENCES.values())


def test_common_voice_row_with_missing_columns_names_the_file_and_line(tmp_path: Path) -> None:
    _make_common_voice(tmp_path)

    tsv_file = tmp_path / "en" / "dev.tsv"

    tsv_file.write_text(tsv_file.read_text() + "client9\tcommon_voice_en_9.mp3\n")

    with pytest.raises(CommandError, match=f"^{tsv_file}:3: malformed row with 2 columns; the header has 13"):
        run_prepare(PROG, ["commonvoice", str(tmp_path / "en"), str(tmp_path / "out")])


def test_covost2_from_split_tsvs(tmp_path: Path) -> None:
    durations = _make_common_voice(tmp_path)

    covost_dir = tmp_path / "covost"
    covost_dir.mkdir()

    header = "path\tsentence\ttranslation\tclient_id"

    for split, (nr, translation) in {
        "train": (1, 'Er sagte zweimal "hallo".'),
        "dev": (2, "Es ist gut."),
        "test": (3, "Ein dritter."),
    }.items():
        clip = f"common_voice_en_{nr}.mp3"

        (covost_dir / f"covost_v2.en_de.{split}.tsv").write_text(
            f"{header}\n{clip}\t{_CV_SENTENCES[clip]}\t{translation}\tclient{nr}\n", encoding="utf-8"
        )

    out_dir = tmp_path / "out"

    run_prepare(PROG, ["covost2", str(tmp_path / "en"), str(covost_dir), str(out_dir), "--src", "en", "--tgt", "de"])

    assert sorted(p.name for p in out_dir.iterdir()) == ["dev.jsonl", "test.jsonl", "train.jsonl"]

    assert _read_manifest(out_dir / "train.jsonl") == [
        {
            "audio_filepath": str(tmp_path / "en" / "clips" / "common_voice_en_1.mp3"),
            "duration": durations["common_voice_en_1.mp3"],
            "text": 'He said "hello" twice.',
            "id": "common_voice_en_1",
            "lang": "en",
            "speaker": "client1",
            "translation": 'Er sagte zweimal "hallo".',
            "tgt_lang": "de",
        }
    ]


def test_covost2_from_the_official_combined_tsv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _make_common_voice(tmp_path)

    covost_dir = tmp_path / "covost"
    covost_dir.mkdir()

    (covost_dir / "covost_v2.en_de.tsv").write_text(
        "path\ttranslation\tsplit\n"
        "common_voice_en_1.mp3\tEins.\ttrain\n"
        "common_voice_en_4.mp3\tVier.\ttrain_covost\n"
        "common_voice_en_2.mp3\tZwei.\tdev\n"
        "common_voice_en_gone.mp3\tWeg.\tdev\n"
        "common_voice_en_3.mp3\tDrei.\ttest\n",
        encoding="utf-8",
    )

    out_dir = tmp_path / "out"

    run_prepare(PROG, ["covost2", str(tmp_path / "en"), str(covost_dir), str(out_dir), "--src", "en", "--tgt", "de"])

    train = _read_manifest(out_dir / "train.jsonl")

    # `train_covost` rows belong to the training set; the transcripts come from validated.tsv.
    assert [(e["id"], e["text"], e["translation"]) for e in train] == [
        ("common_voice_en_1", 'He said "hello" twice.', "Eins."),
        ("common_voice_en_4", "Only in CoVoST's train_covost.", "Vier."),
    ]

    assert [e["id"] for e in _read_manifest(out_dir / "dev.jsonl")] == ["common_voice_en_2"]

    dev_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("dev "))

    assert "skipped 1 (not in validated.tsv: 1)" in dev_line


def test_covost2_without_tsv_names_the_expected_file(tmp_path: Path) -> None:
    _make_common_voice(tmp_path)

    (tmp_path / "covost").mkdir()

    with pytest.raises(CommandError, match=f"^{tmp_path / 'covost' / 'covost_v2.en_de.tsv'}: CoVoST 2's TSV"):
        run_prepare(
            PROG,
            [
                "covost2",
                str(tmp_path / "en"),
                str(tmp_path / "covost"),
                str(tmp_path / "out"),
                "--src",
                "en",
                "--tgt",
                "de",
            ],
        )


# EuroParl-ST ------------------------------------------------------------------


def _make_europarl_st(root: Path, audio_ext: str) -> dict[str, float]:
    """Writes ``root/v1.1/en`` with two talks and an en-fr dev split of three
    segments; returns the talks' durations."""
    en_dir = root / "v1.1" / "en"

    durations = {}

    for talk, num_frames in (
        ("en.20080925.22.3-198", 3 * SAMPLE_RATE),
        ("en.20081008.13.3-070", 2 * SAMPLE_RATE + 100),
    ):
        talk_file = en_dir / "audios" / f"{talk}.{audio_ext}"

        if audio_ext == "m4a":
            talk_file.parent.mkdir(parents=True, exist_ok=True)

            talk_file.write_bytes(b"AAC is not for libsndfile")
        else:
            durations[talk] = _write_audio(talk_file, num_frames)

    split_dir = en_dir / "fr" / "dev"
    split_dir.mkdir(parents=True)

    (split_dir / "segments.lst").write_text(
        "en.20080925.22.3-198 0.35 1.2\n"
        "en.20080925.22.3-198 1.2 2.95\n"
        # Past the end of the 2.00625 s talk: cut at its end.
        "en.20081008.13.3-070 0.5 2.1\n"
    )
    (split_dir / "segments.en").write_text("First sentence.\nSecond sentence.\nThird sentence.\n")
    (split_dir / "segments.fr").write_text("Première phrase.\nDeuxième phrase.\nTroisième phrase.\n")

    return durations


def test_europarl_st_writes_segments_of_the_talks(tmp_path: Path) -> None:
    _make_europarl_st(tmp_path, "flac")

    out_dir = tmp_path / "out"

    # ROOT is the parent of v1.1/.
    args = [
        "europarl-st",
        str(tmp_path),
        str(out_dir),
        "--src",
        "en",
        "--tgt",
        "fr",
        "--splits",
        "dev",
        "--audio-ext",
        "flac",
    ]

    assert run_prepare(PROG, args) == 0

    audio_dir = tmp_path / "v1.1" / "en" / "audios"

    assert _read_manifest(out_dir / "dev.jsonl") == [
        {
            "audio_filepath": str(audio_dir / "en.20080925.22.3-198.flac"),
            "duration": 0.85,
            "offset": 0.35,
            "text": "First sentence.",
            "id": "en.20080925.22.3-198_0.35_1.2",
            "lang": "en",
            "translation": "Première phrase.",
            "tgt_lang": "fr",
        },
        {
            "audio_filepath": str(audio_dir / "en.20080925.22.3-198.flac"),
            "duration": 1.75,
            "offset": 1.2,
            "text": "Second sentence.",
            "id": "en.20080925.22.3-198_1.2_2.95",
            "lang": "en",
            "translation": "Deuxième phrase.",
            "tgt_lang": "fr",
        },
        {
            "audio_filepath": str(audio_dir / "en.20081008.13.3-070.flac"),
            "duration": 1.50625,
            "offset": 0.5,
            "text": "Third sentence.",
            "id": "en.20081008.13.3-070_0.5_2.1",
            "lang": "en",
            "translation": "Troisième phrase.",
            "tgt_lang": "fr",
        },
    ]


def test_europarl_st_m4a_recordings_are_listed_with_a_note_to_convert_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _make_europarl_st(tmp_path, "m4a")

    out_dir = tmp_path / "out"

    run_prepare(
        PROG, ["europarl-st", str(tmp_path / "v1.1"), str(out_dir), "--src", "en", "--tgt", "fr", "--splits", "dev"]
    )

    # Durations from segments.lst, unchecked against the undecodable recordings.
    assert [(e["offset"], e["duration"]) for e in _read_manifest(out_dir / "dev.jsonl")] == [
        (0.35, 0.85),
        (1.2, 1.75),
        (0.5, 1.6),
    ]

    printed = capsys.readouterr().out

    assert "NOTE: libsndfile cannot decode .m4a audio" in printed and "--audio-ext flac" in printed


def test_europarl_st_malformed_or_unaligned_files_are_named(tmp_path: Path) -> None:
    _make_europarl_st(tmp_path, "flac")

    split_dir = tmp_path / "v1.1" / "en" / "fr" / "dev"

    args = [
        "europarl-st",
        str(tmp_path),
        str(tmp_path / "out"),
        "--src",
        "en",
        "--tgt",
        "fr",
        "--splits",
        "dev",
        "--audio-ext",
        "flac",
    ]

    segments_file = split_dir / "segments.lst"

    segments_file.write_text(segments_file.read_text().replace("1.2 2.95", "2.95 1.2"))

    with pytest.raises(CommandError, match=f"^{segments_file}:2: malformed segment line"):
        run_prepare(PROG, args)

    (split_dir / "segments.fr").write_text("Une seule phrase.\n")

    with pytest.raises(CommandError, match="must be line-aligned, but have 3, 3 and 1 lines"):
        run_prepare(PROG, args)


def test_libsndfile_reads_flac_wav_mp3_but_not_m4a() -> None:
    assert libsndfile_reads("flac") and libsndfile_reads(".wav") and libsndfile_reads("MP3")

    assert not libsndfile_reads("m4a")


# Spoken-SQuAD -------------------------------------------------------------------------


def _make_spoken_squad(root: Path) -> dict[str, list[Path]]:
    """Writes the test split of a two-article Spoken-SQuAD: article 0 with a
    paragraph of two sentences (two questions), article 1 with a paragraph of
    one sentence (one question); returns the sentence files by paragraph."""
    articles = [
        {
            "title": "Super_Bowl_50",
            "paragraphs": [
                {
                    "context": "super bowl fifty was an american football game",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "Which game?",
                            "answers": [{"answer_start": 0, "text": "super bowl fifty"}],
                        },
                        {
                            "id": "q2",
                            "question": "What sport?",
                            "answers": [
                                {"answer_start": 32, "text": "american football"},
                                {"answer_start": 41, "text": "football"},
                            ],
                        },
                    ],
                }
            ],
        },
        {
            "title": "Warsaw",
            "paragraphs": [
                {
                    "context": "warsaw is the capital of poland",
                    "qas": [
                        {
                            "id": "q3",
                            "question": "Capital of what?",
                            "answers": [{"answer_start": 25, "text": "poland"}],
                        }
                    ],
                }
            ],
        },
    ]

    (root / "spoken_test-v1.1.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "spoken_test-v1.1.json").write_text(json.dumps({"data": articles, "version": "1.1"}), encoding="utf-8")

    sentences = {
        "0_0": [root / "dev_wav" / "0_0_0.wav", root / "dev_wav" / "0_0_1.wav"],
        "1_0": [root / "dev_wav" / "1_0_0.wav"],
    }

    for files in sentences.values():
        for nr, file in enumerate(files):
            _write_audio(file, num_frames=1600 + 400 * nr + len(file.stem), subtype="PCM_16")

    # A file of another corpus layout is ignored.
    (root / "dev_wav" / "README.txt").write_text("sentence audio")

    return sentences


def test_spoken_squad_writes_a_line_per_question_on_the_concatenated_paragraph(tmp_path: Path) -> None:
    sentences = _make_spoken_squad(tmp_path / "corpus")

    out_dir = tmp_path / "out"

    assert run_prepare(PROG, ["spoken-squad", str(tmp_path / "corpus"), str(out_dir), "--splits", "test"]) == 0

    paragraph_wav = out_dir / "audio" / "test" / "0_0.wav"

    test = _read_manifest(out_dir / "test.jsonl")

    assert test[:2] == [
        {
            "audio_filepath": str(paragraph_wav),
            "duration": soundfile.info(str(paragraph_wav)).duration,
            "text": "super bowl fifty was an american football game",
            "id": question_id,
            "lang": "en",
            "question": question,
            "answers": answers,
        }
        for question_id, question, answers in [
            ("q1", "Which game?", ["super bowl fifty"]),
            ("q2", "What sport?", ["american football", "football"]),
        ]
    ]

    assert [(e["id"], e["audio_filepath"]) for e in test[2:]] == [("q3", str(out_dir / "audio" / "test" / "1_0.wav"))]

    # The sentences in order, sample for sample.
    expected = np.concatenate([soundfile.read(str(f), dtype="int16")[0] for f in sentences["0_0"]])

    audio, sample_rate = soundfile.read(str(paragraph_wav), dtype="int16")

    assert sample_rate == SAMPLE_RATE
    np.testing.assert_array_equal(audio, expected)

    assert test[0]["duration"] == pytest.approx(len(expected) / SAMPLE_RATE)

    # The training and evaluation reader takes the lines as they are.
    records = read_manifest(out_dir / "test.jsonl").records

    assert [(r.id, r.fields["answers"]) for r in records] == [(e["id"], e["answers"]) for e in test]

    # A second run keeps the paragraphs already written.
    modified = paragraph_wav.stat().st_mtime_ns

    assert run_prepare(PROG, ["spoken-squad", str(tmp_path / "corpus"), str(out_dir), "--splits", "test"]) == 0

    assert paragraph_wav.stat().st_mtime_ns == modified
    assert _read_manifest(out_dir / "test.jsonl") == test


def test_spoken_squad_missing_sentence_fails_naming_it_unless_skipped(tmp_path: Path) -> None:
    sentences = _make_spoken_squad(tmp_path / "corpus")

    # A gap in the sentence numbers (a missing last sentence cannot be told
    # from a shorter paragraph).
    sentences["0_0"][0].unlink()

    args = ["spoken-squad", str(tmp_path / "corpus"), str(tmp_path / "out"), "--splits", "test"]

    with pytest.raises(CommandError) as error:
        run_prepare(PROG, args)

    assert str(error.value) == (
        f"{sentences['0_0'][0]}: the audio file is missing (a sentence of {tmp_path / 'corpus' / 'spoken_test-v1.1.json'}: "
        "data[0].paragraphs[0]); --skip-missing skips the paragraph's questions."
    )

    assert run_prepare(PROG, [*args, "--skip-missing"]) == 0

    assert [e["id"] for e in _read_manifest(tmp_path / "out" / "test.jsonl")] == ["q3"]


def test_spoken_squad_bad_input_is_named(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"

    sentences = _make_spoken_squad(corpus)

    args = ["spoken-squad", str(corpus), str(tmp_path / "out"), "--splits", "test"]

    json_file = corpus / "spoken_test-v1.1.json"

    document = json.loads(json_file.read_text())

    del document["data"][1]["paragraphs"][0]["qas"][0]["question"]

    json_file.write_text(json.dumps(document))

    with pytest.raises(
        CommandError,
        match=r"spoken_test-v1\.1\.json: data\[1\]\.paragraphs\[0\]\.qas\[0\]: the `question` field must be a string\.$",
    ):
        run_prepare(PROG, args)

    json_file.write_text('{"data": [\n  {"paragraphs": [}\n]}')

    with pytest.raises(CommandError, match=r"spoken_test-v1\.1\.json:2: not valid JSON"):
        run_prepare(PROG, args)

    _make_spoken_squad(corpus)

    # Sentences of one paragraph at different sample rates cannot be joined.
    _write_audio(sentences["0_0"][1], num_frames=800, sample_rate=8000)

    with pytest.raises(
        CommandError,
        match=r"0_0_1\.wav: 8000 Hz with 1 channel\(s\), but the paragraph's first sentence 0_0_0\.wav has 16000 Hz",
    ):
        run_prepare(PROG, args)


# LibriSQA -------------------------------------------------------------------------


def _make_librisqa(root: Path) -> None:
    """LibriSpeech's dev-clean (two utterances) and LibriSQA's test split of
    both parts, in the release's folders."""
    _make_librispeech(root / "librispeech", subsets=("dev-clean",))

    part1 = [
        # As the release names the audio: relative to LibriSpeech/, `.wav`.
        {
            "speech_path": "dev-clean/84/121123/84-121123-0000.wav",
            "text": "Chapter zero, utterance zero.",
            "question": "Which utterance?",
            "answer": "The first one.",
        },
        # By LibriSpeech id, without `text`: the LibriSpeech transcript.
        {"id": "84-121123-0001", "question": "And this one?", "answer": "The second one."},
    ]

    part1_dir = root / "librisqa" / "LibriSQA-PartI"
    part1_dir.mkdir(parents=True)
    (part1_dir / "LibriSQA-PartI-test.json").write_text(json.dumps(part1, indent=1), encoding="utf-8")

    part2 = [
        {
            "speech_path": "LibriSpeech/dev-clean/84/121123/84-121123-0001.flac",
            "question": "What is said? (A) chapter zero (B) chapter three (C) nothing (D) a song",
            "answer": "(A) chapter zero",
        },
        {
            "speech_path": "dev-clean/84/121123/84-121123-0000.flac",
            "question": "Which one?",
            "choices": ["first", "second"],
            "answer": "A",
        },
    ]

    (root / "librisqa" / "LibriSQA-PartII-test.jsonl").write_text(
        "\n".join(json.dumps(r) for r in part2) + "\n", encoding="utf-8"
    )


def test_librisqa_writes_both_parts_with_questions_answers_and_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _make_librisqa(tmp_path)

    out_dir = tmp_path / "out"

    args = ["librisqa", str(tmp_path / "librisqa"), str(tmp_path / "librispeech"), str(out_dir), "--splits", "test"]

    assert run_prepare(PROG, args) == 0

    chapter_dir = tmp_path / "librispeech" / "LibriSpeech" / "dev-clean" / "84" / "121123"

    def audio(nr: int) -> dict[str, object]:
        path = chapter_dir / f"84-121123-{nr:04d}.flac"

        return {"audio_filepath": str(path), "duration": soundfile.info(str(path)).duration}

    assert _read_manifest(out_dir / "part1" / "test.jsonl") == [
        {
            **audio(0),
            "text": "Chapter zero, utterance zero.",
            "id": "84-121123-0000_0",
            "lang": "en",
            "speaker": "84",
            "question": "Which utterance?",
            "answers": ["The first one."],
            "part": "I",
        },
        {
            **audio(1),
            "text": "CHAPTER 0 UTTERANCE 1",
            "id": "84-121123-0001_1",
            "lang": "en",
            "speaker": "84",
            "question": "And this one?",
            "answers": ["The second one."],
            "part": "I",
        },
    ]

    part2 = _read_manifest(out_dir / "part2" / "test.jsonl")

    assert [(e["id"], e["text"], e["answers"], e["part"], e["choices"]) for e in part2] == [
        (
            "84-121123-0001_0",
            "CHAPTER 0 UTTERANCE 1",
            ["(A) chapter zero"],
            "II",
            ["chapter zero", "chapter three", "nothing", "a song"],
        ),
        ("84-121123-0000_1", "CHAPTER 0 UTTERANCE 0", ["A"], "II", ["first", "second"]),
    ]

    assert part2[0]["question"] == "What is said? (A) chapter zero (B) chapter three (C) nothing (D) a song"

    printed = capsys.readouterr().out

    assert f"-> {out_dir / 'part1' / 'test.jsonl'}" in printed and printed.startswith("part1/test")


def test_librisqa_bad_records_are_named_by_file_and_line(tmp_path: Path) -> None:
    _make_librisqa(tmp_path)

    part2_file = tmp_path / "librisqa" / "LibriSQA-PartII-test.jsonl"

    args = [
        "librisqa",
        str(tmp_path / "librisqa"),
        str(tmp_path / "librispeech"),
        str(tmp_path / "out"),
        "--splits",
        "test",
    ]

    part2_file.write_text(
        part2_file.read_text()
        + json.dumps({"speech_path": "dev-clean/84/121123/84-121123-0000.flac", "question": "Which?", "answer": "B"})
        + "\n"
    )

    with pytest.raises(CommandError) as error:
        run_prepare(PROG, args)

    assert str(error.value) == (
        f"{part2_file}:3: a Part II record needs its choices: a `choices` list, or `(A) ... (B) ...` in the question."
    )

    part2_file.write_text('{"speech_path": "dev-clean/84/121123/84-121123-0000.flac", "answer": "B"}\n')

    with pytest.raises(CommandError, match=r"PartII-test\.jsonl:1: the `question` field is missing"):
        run_prepare(PROG, args)

    part2_file.write_text(
        '{"speech_path": "dev-clean/84/121123/84-121123-9999.flac", "question": "Q?", "answer": "A", "choices": ["a", "b"]}\n'
    )

    with pytest.raises(
        CommandError, match=r"84-121123-9999\.flac: the audio file is missing \(listed in .*PartII-test\.jsonl:1\)"
    ):
        run_prepare(PROG, args)

    with pytest.raises(CommandError) as error:
        run_prepare(PROG, [*args[:-2], "--parts", "1"])

    assert str(error.value) == (
        f"{tmp_path / 'librisqa'}: no LibriSQA Part I train file in it (LibriSQA-PartI/LibriSQA-PartI-train.json, "
        "or .jsonl, or either without the LibriSQA-PartI/ folder)."
    )

    # A record that names no audio.
    part2_file.write_text('{"question": "Q?", "answer": "A", "choices": ["a", "b"]}\n')

    with pytest.raises(CommandError, match=r"PartII-test\.jsonl:1: the record names no audio"):
        run_prepare(PROG, args)
