"""Bad input through the command line, case by case (the README's "Bad
input" table): the exit code, one error line naming the manifest line and the
audio file, no traceback; with ``dataset.on_bad_sample=skip`` the run goes on
and counts what it skipped. The commands run in this process (torch and
fairseq2 are imported once) on the tiny random-weight models."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from fairseq2_speechmapper.cli.main import main
from fairseq2_speechmapper.cli.tiny_assets import (
    TINY_LLAMA_CARD,
    TINY_MAPPER_CARD,
    TINY_QWEN_CARD,
    TINY_SPEECH_ENCODER_CARD,
)

GOOD_LINES = 4

TOO_LONG_TEXT = " ".join(["word"] * 200)


def _write_wav(path: Path, seconds: float = 1.0, *, sample_rate: int = 16_000, channels: int = 1) -> None:
    rng = np.random.default_rng(0)

    samples = (0.1 * rng.standard_normal((int(seconds * sample_rate), channels))).astype(np.float32)

    soundfile.write(path, samples, sample_rate, subtype="FLOAT")


def _write_nan_wav(path: Path) -> None:
    samples = np.zeros(16_000, dtype=np.float32)

    samples[100] = np.nan

    soundfile.write(path, samples, 16_000, subtype="FLOAT")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good 16 kHz mono files, and one file per kind of bad audio."""
    path = tmp_path_factory.mktemp("bad_input_audio")

    for i in range(GOOD_LINES):
        _write_wav(path / f"good_{i}.wav")

    (path / "empty.wav").write_bytes(b"")
    (path / "truncated.wav").write_bytes((path / "good_0.wav").read_bytes()[:4000])
    (path / "not_audio.wav").write_bytes(b"RIFF but not audio at all " * 40)

    soundfile.write(path / "zero_length.wav", np.zeros(0, dtype=np.float32), 16_000)

    _write_nan_wav(path / "nan.wav")
    _write_wav(path / "stereo.wav", channels=2)
    _write_wav(path / "8khz.wav", sample_rate=8_000)
    _write_wav(path / "long.wav", 3.0)

    return path


def _line(audio: str, *, duration: float = 1.0, text: str = "hello world") -> str:
    return json.dumps({"audio_filepath": audio, "duration": duration, "text": text})


def _write_manifest(directory: Path, split: str, audio_dir: Path, bad_lines: list[str]) -> Path:
    """The good files on lines 1 to ``GOOD_LINES``, then ``bad_lines``."""
    directory.mkdir(parents=True, exist_ok=True)

    lines = [_line(str(audio_dir / f"good_{i}.wav")) for i in range(GOOD_LINES)] + bad_lines

    manifest = directory / f"{split}.jsonl"

    manifest.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    return manifest


def _dataset(manifest_dir: Path, **overrides: object) -> dict[str, object]:
    """Batches in manifest order; with ``sort_window`` the number of
    utterances read, a training step reads exactly one epoch."""
    return {
        "name": None,
        "manifest_dir": str(manifest_dir),
        "train_split": "train",
        "valid_split": None,
        "max_duration": 2.0,
        "max_batch_seconds": 32.0,
        "max_batch_size": 16,
        "sort_window": 1,
        "shuffle": False,
        "num_parallel_calls": 1,
        "num_prefetch": 1,
        **overrides,
    }


def _regime(num_steps: int, *, every: int = 1) -> dict[str, object]:
    return {
        "num_steps": num_steps,
        "validate_every_n_steps": every,
        "checkpoint_every_n_steps": every,
        "publish_metrics_every_n_steps": every,
        "keep_last_n_checkpoints": 2,
    }


_COMMON = {"no_sweep_dir": True, "metric_recorders": {"tensorboard": {"enabled": False}}}


def _pretrain_config(tmp_path: Path, dataset: dict[str, object], *, num_steps: int = 1, every: int = 1) -> Path:
    config = {
        "model": {"family": "speechmapper", "arch": "tiny"},
        "speech_encoder": {"name": TINY_SPEECH_ENCODER_CARD, "layer": 2},
        "llm": {"name": TINY_LLAMA_CARD},
        "mapper_card": {"name": f"speechmapper_bad_input_{tmp_path.name}"},
        "dataset": dataset,
        "trainer": {"mixed_precision": {"mode": "off"}},
        "optimizer": {"name": "adamw", "config": {"lr": 0.001}},
        "lr_scheduler": {"name": "cosine_annealing", "config": {"num_warmup_steps": 0}},
        "regime": _regime(num_steps, every=every),
        "common": _COMMON,
    }

    config_file = tmp_path / "pretrain.yaml"

    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    return config_file


def _instruct_config(tmp_path: Path, dataset: dict[str, object]) -> Path:
    config = {
        "model": {"name": TINY_MAPPER_CARD},
        "dataset": dataset,
        "trainer": {"mixed_precision": {"mode": "off"}},
        "optimizer": {"name": "adamw", "config": {"lr": 0.001}},
        "regime": _regime(1),
        "common": _COMMON,
    }

    config_file = tmp_path / "instruct.yaml"

    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    return config_file


def _evaluate_config(tmp_path: Path, model: str, dataset: dict[str, object], **common: object) -> Path:
    config = {
        "model": {"name": model},
        "dataset": dataset,
        "generation": {"max_new_tokens": 2},
        "common": {**_COMMON, **common},
    }

    config_file = tmp_path / "evaluate.yaml"

    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    return config_file


@pytest.fixture(scope="module", autouse=True)
def _restore_logging() -> Iterator[None]:
    """fairseq2 points the root logger at this module's captured stderr; the
    next modules get the handlers they had."""
    root = logging.getLogger()

    handlers = root.handlers[:]

    yield

    for handler in root.handlers[:]:
        root.removeHandler(handler)

    for handler in handlers:
        root.addHandler(handler)


@pytest.fixture
def cli(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str]]:
    """Runs ``fairseq2 speechmapper ARGS`` in this process; returns the exit
    code and what it wrote to stdout and stderr."""
    monkeypatch.delenv("FAIRSEQ2_SPEECHMAPPER_TRACEBACK", raising=False)

    def run(*args: str) -> tuple[int, str]:
        capfd.readouterr()

        with pytest.raises(SystemExit) as info:
            main(["speechmapper", *args, "--no-rich"] if args[0] != "model-info" else ["speechmapper", *args])

        out, err = capfd.readouterr()

        return int(info.value.code or 0), out + err

    return run


def _error_line(output: str) -> str:
    """The one error line: fairseq2's (``ERROR:``) or the command line's (``error:``)."""
    assert "Traceback" not in output, output[-3000:]

    lines = [line for line in output.splitlines() if "ERROR" in line or line.startswith("error:")]

    assert len(lines) == 1, output[-3000:]

    return lines[0]


def _metrics(output_dir: Path, kind: str) -> list[dict[str, object]]:
    lines = (output_dir / "metrics" / f"{kind}.jsonl").read_text(encoding="utf-8").splitlines()

    return [json.loads(line) for line in lines]


def _total(output_dir: Path, kind: str, name: str) -> int:
    return sum(int(m.get(name, 0)) for m in _metrics(output_dir, kind))  # type: ignore[call-overload]


# ---- error mode: one case each, through pretrain ------------------------------------------

# case -> (the bad line, a reason in the message, `dataset` overrides)
AUDIO_CASES: dict[str, tuple[Callable[[Path], str], str, dict[str, object]]] = {
    "missing": (lambda d: _line(str(d / "missing.wav")), "does not exist or cannot be read", {}),
    "empty": (lambda d: _line(str(d / "empty.wav")), "is empty", {}),
    "truncated": (lambda d: _line(str(d / "truncated.wav")), "the file is truncated", {}),
    "non_audio": (lambda d: _line(str(d / "not_audio.wav")), "cannot be decoded as audio", {}),
    "zero_length": (lambda d: _line(str(d / "zero_length.wav")), "holds no audio samples", {}),
    "nan": (lambda d: _line(str(d / "nan.wav")), "holds NaN or infinite samples", {}),
    "stereo_unconverted": (
        lambda d: _line(str(d / "stereo.wav")),
        "has 2 channels, but mono is expected",
        {"convert_audio": False},
    ),
    "8khz_unconverted": (
        lambda d: _line(str(d / "8khz.wav")),
        "is sampled at 8000 Hz, but 16 kHz is expected",
        {"convert_audio": False},
    ),
}

LINE_CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "malformed_json": (lambda d: '{"audio_filepath": "good_0.wav", "duration": ', "the line is not valid JSON"),
    "missing_field": (
        lambda d: json.dumps({"audio_filepath": str(d / "good_0.wav"), "duration": 1.0}),
        "the `text` field is missing",
    ),
    "negative_duration": (
        lambda d: _line(str(d / "good_0.wav"), duration=-1.0),
        "the `duration` field must be a positive number of seconds",
    ),
}


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_bad_audio_stops_with_one_line_naming_line_and_file(
    cli: Callable[..., tuple[int, str]], audio_dir: Path, tmp_path: Path, case: str
) -> None:
    make_line, reason, overrides = AUDIO_CASES[case]

    manifest = _write_manifest(tmp_path / "manifests", "train", audio_dir, [make_line(audio_dir)])

    config = _pretrain_config(tmp_path, _dataset(manifest.parent, **overrides))

    exit_code, output = cli("pretrain", str(tmp_path / "out"), "--config-file", str(config))

    assert exit_code == 2, output[-3000:]

    error = _error_line(output)

    audio_file = json.loads(make_line(audio_dir))["audio_filepath"]

    assert f"{manifest}:{GOOD_LINES + 1}: " in error and audio_file in error and reason in error, error


@pytest.mark.parametrize("case", list(LINE_CASES))
def test_bad_manifest_line_stops_with_one_line_naming_it(
    cli: Callable[..., tuple[int, str]], audio_dir: Path, tmp_path: Path, case: str
) -> None:
    make_line, reason = LINE_CASES[case]

    manifest = _write_manifest(tmp_path / "manifests", "train", audio_dir, [make_line(audio_dir)])

    exit_code, output = cli(
        "pretrain", str(tmp_path / "out"), "--config-file", str(_pretrain_config(tmp_path, _dataset(manifest.parent)))
    )

    assert exit_code == 2

    error = _error_line(output)

    assert f"{manifest}:{GOOD_LINES + 1}: {reason}" in error, error


@pytest.mark.parametrize(
    ("num_samples", "reason"),
    [(8_000, "the manifest says 0.50 s: the sample count is wrong"), (32_000, "the file is truncated")],
    ids=["fewer", "more"],
)
def test_tsv_with_a_wrong_sample_count_stops_with_one_line(
    cli: Callable[..., tuple[int, str]], audio_dir: Path, tmp_path: Path, num_samples: int, reason: str
) -> None:
    manifest_dir = tmp_path / "manifests"
    manifest_dir.mkdir()

    counts = [16_000] * GOOD_LINES + [num_samples]

    rows = [f"good_{i % GOOD_LINES}.wav\t{n}" for i, n in enumerate(counts)]

    (manifest_dir / "train.tsv").write_text(f"{audio_dir}\n" + "".join(row + "\n" for row in rows), encoding="utf-8")
    (manifest_dir / "train.wrd").write_text("hello world\n" * len(rows), encoding="utf-8")

    exit_code, output = cli(
        "pretrain", str(tmp_path / "out"), "--config-file", str(_pretrain_config(tmp_path, _dataset(manifest_dir)))
    )

    assert exit_code == 2

    error = _error_line(output)

    # Line 1 is the audio root.
    assert f"{manifest_dir / 'train.tsv'}:{len(rows) + 1}: {audio_dir / 'good_0.wav'}: " in error, error
    assert reason in error, error


# ---- skip mode: every case in one run, train and validation -------------------------------


def test_skip_mode_skips_and_counts_every_bad_case_and_trains_on_the_rest(
    cli: Callable[..., tuple[int, str]], audio_dir: Path, tmp_path: Path
) -> None:
    skipped_audio = ["truncated", "non_audio", "zero_length", "nan"]
    skipped_lines = ["missing", "empty"]

    bad_lines = [AUDIO_CASES[case][0](audio_dir) for case in skipped_audio + skipped_lines]
    bad_lines += [make_line(audio_dir) for make_line, _ in LINE_CASES.values()]

    # Converted, kept as they are, left out and skipped by the stage-1 targets.
    bad_lines += [
        _line(str(audio_dir / "stereo.wav")),
        _line(str(audio_dir / "8khz.wav")),
        _line(str(audio_dir / "good_1.wav"), text=""),
        _line(str(audio_dir / "long.wav"), duration=3.0),
        _line(str(audio_dir / "good_2.wav"), text=TOO_LONG_TEXT),
    ]

    manifest_dir = tmp_path / "manifests"

    _write_manifest(manifest_dir, "train", audio_dir, bad_lines)
    _write_manifest(manifest_dir, "dev", audio_dir, [_line(str(audio_dir / "truncated.wav"))])

    num_bad_lines = len(skipped_lines) + len(LINE_CASES)

    # Read: the good lines, the bad audio, the bad lines, the converted files and the two transcripts.
    num_read = GOOD_LINES + len(skipped_audio) + num_bad_lines + 4

    dataset = _dataset(
        manifest_dir,
        valid_split="dev",
        on_bad_sample="skip",
        sort_window=num_read,
        max_batch_size=num_read,
        max_batch_seconds=2.0 * num_read,
    )

    config = _pretrain_config(tmp_path, dataset)

    output_dir = tmp_path / "out"

    exit_code, output = cli("pretrain", str(output_dir), "--config-file", str(config))

    assert exit_code == 0, output[-3000:]

    assert f"{num_bad_lines} bad lines skipped, 1 outside 0.1-2.0 s left out" in output

    # One step reads the whole manifest once; the lines bad at start-up count too.
    assert _total(output_dir, "train", "Skipped (Bad Input)") == len(skipped_audio) + num_bad_lines
    assert _total(output_dir, "train", "Skipped (Transcript Too Long)") == 1

    assert _total(output_dir, "valid", "Skipped (Bad Input)") == 1
    assert _total(output_dir, "valid", "Number of Examples") == GOOD_LINES


def test_bad_file_in_validation_stops_with_one_line(
    cli: Callable[..., tuple[int, str]], audio_dir: Path, tmp_path: Path
) -> None:
    manifest_dir = tmp_path / "manifests"

    _write_manifest(manifest_dir, "train", audio_dir, [])
    dev = _write_manifest(manifest_dir, "dev", audio_dir, [_line(str(audio_dir / "not_audio.wav"))])

    config = _pretrain_config(tmp_path, _dataset(manifest_dir, valid_split="dev"))

    exit_code, output = cli("pretrain", str(tmp_path / "out"), "--config-file", str(config))

    assert exit_code == 2

    assert f"{dev}:{GOOD_LINES + 1}: {audio_dir / 'not_audio.wav'}: cannot be decoded" in _error_line(output)


# ---- the last good checkpoint survives, and the same command resumes after the fix -------


def test_bad_file_after_a_checkpoint_keeps_it_and_the_fixed_run_resumes(
    cli: Callable[..., tuple[int, str]], audio_dir: Path, tmp_path: Path
) -> None:
    manifest_dir = tmp_path / "manifests"

    # Batches of 2 in manifest order: the truncated file on line 5 is read at step 3.
    bad_line = _line(str(audio_dir / "truncated.wav"))

    manifest = _write_manifest(manifest_dir, "train", audio_dir, [bad_line, _line(str(audio_dir / "good_3.wav"))])

    dataset = _dataset(manifest_dir, max_batch_size=2, max_batch_seconds=4.0)

    config = _pretrain_config(tmp_path, dataset, num_steps=4, every=2)

    output_dir = tmp_path / "out"

    exit_code, output = cli("pretrain", str(output_dir), "--config-file", str(config))

    assert exit_code == 2
    assert f"{manifest}:{GOOD_LINES + 1}: {audio_dir / 'truncated.wav'}: " in _error_line(output)

    checkpoints = sorted(p.name for p in (output_dir / "checkpoints").iterdir() if p.name.startswith("step_"))

    assert checkpoints == ["step_2"]

    manifest.write_text(manifest.read_text().replace("truncated.wav", "good_0.wav"), encoding="utf-8")

    exit_code, output = cli("pretrain", str(output_dir), "--config-file", str(config))

    assert exit_code == 0, output[-3000:]
    assert "Restoring training from the last checkpoint at step 2." in output

    assert [m["Step"] for m in _metrics(output_dir, "train")] == [2, 4]
    assert (output_dir / "checkpoints" / "step_4").is_dir()


# ---- the feature cache: extraction, and pretraining from it --------------------------------


def test_extraction_and_pretraining_from_the_cache_stop_at_or_skip_and_count_bad_audio(
    cli: Callable[..., tuple[int, str]], audio_dir: Path, tmp_path: Path
) -> None:
    manifest_dir = tmp_path / "manifests"

    manifest = _write_manifest(manifest_dir, "train", audio_dir, [_line(str(audio_dir / "not_audio.wav"))])

    extract = [
        "extract-features",
        str(tmp_path / "cache"),
        "--config",
        f"speech_encoder.name={TINY_SPEECH_ENCODER_CARD}",
        "speech_encoder.layer=2",
        "dataset.name=null",
        f"dataset.manifest_dir={manifest_dir}",
        "dataset.train_split=train",
        "dataset.valid_split=null",
        "dataset.max_duration=2.0",
        "dataset.num_parallel_calls=1",
        "common.metric_recorders.tensorboard.enabled=false",
    ]

    exit_code, output = cli(*extract)

    assert exit_code == 2

    message = f"{manifest}:{GOOD_LINES + 1}: {audio_dir / 'not_audio.wav'}: cannot be decoded"

    assert message in _error_line(output)

    exit_code, output = cli(*extract, "dataset.on_bad_sample=skip")

    assert exit_code == 0, output[-3000:]

    dataset = _dataset(manifest_dir, feature_cache=str(tmp_path / "cache"), sort_window=GOOD_LINES + 1)

    config = _pretrain_config(tmp_path, dataset)

    exit_code, output = cli("pretrain", str(tmp_path / "strict"), "--config-file", str(config))

    assert exit_code == 2
    assert message in _error_line(output)

    output_dir = tmp_path / "lenient"

    exit_code, output = cli(
        "pretrain", str(output_dir), "--config-file", str(config), "--config", "dataset.on_bad_sample=skip"
    )

    assert exit_code == 0, output[-3000:]
    assert _total(output_dir, "train", "Skipped (Bad Input)") == 1


# ---- stage 2: instruct and evaluate -------------------------------------------------------


@pytest.fixture(scope="module")
def stage2_manifests(audio_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest_dir = tmp_path_factory.mktemp("stage2_manifests")

    _write_manifest(manifest_dir, "train", audio_dir, [_line(str(audio_dir / "not_audio.wav"))])

    return manifest_dir


@pytest.mark.parametrize("on_bad_sample", ["error", "skip"])
def test_instruct_stops_at_or_skips_and_counts_bad_audio(
    cli: Callable[..., tuple[int, str]], audio_dir: Path, stage2_manifests: Path, tmp_path: Path, on_bad_sample: str
) -> None:
    dataset = _dataset(stage2_manifests, on_bad_sample=on_bad_sample, sort_window=GOOD_LINES + 1)

    config = _instruct_config(tmp_path, dataset)

    output_dir = tmp_path / f"it_{on_bad_sample}"

    exit_code, output = cli("instruct", str(output_dir), "--config-file", str(config))

    _assert_stopped_at_or_counted(on_bad_sample, exit_code, output, output_dir, "train", stage2_manifests, audio_dir)


@pytest.mark.parametrize("on_bad_sample", ["error", "skip"])
def test_evaluate_stops_at_or_skips_and_counts_bad_audio(
    cli: Callable[..., tuple[int, str]], audio_dir: Path, stage2_manifests: Path, tmp_path: Path, on_bad_sample: str
) -> None:
    dataset = _dataset(stage2_manifests, valid_split="train", on_bad_sample=on_bad_sample)

    config_file = _evaluate_config(tmp_path, TINY_MAPPER_CARD, dataset)

    output_dir = tmp_path / "eval"

    exit_code, output = cli("evaluate", str(output_dir), "--config-file", str(config_file))

    _assert_stopped_at_or_counted(
        on_bad_sample, exit_code, output, output_dir, "generation", stage2_manifests, audio_dir
    )


def _assert_stopped_at_or_counted(
    on_bad_sample: str, exit_code: int, output: str, output_dir: Path, metrics: str, manifests: Path, audio_dir: Path
) -> None:
    """The run stopped at the non-audio line in one line naming it, or skipped and counted it."""
    if on_bad_sample == "error":
        assert exit_code == 2

        error = _error_line(output)

        assert f"{manifests / 'train.jsonl'}:{GOOD_LINES + 1}: {audio_dir / 'not_audio.wav'}: " in error
    else:
        assert exit_code == 0, output[-3000:]
        assert _total(output_dir, metrics, "Skipped (Bad Input)") == 1


# ---- cards, checkpoints and configuration values ------------------------------------------


def test_unknown_card_is_one_line(cli: Callable[..., tuple[int, str]], audio_dir: Path, tmp_path: Path) -> None:
    manifest = _write_manifest(tmp_path / "manifests", "train", audio_dir, [])

    config = _pretrain_config(tmp_path, _dataset(manifest.parent))

    exit_code, output = cli(
        "pretrain", str(tmp_path / "out"), "--config-file", str(config), "--config", "llm.name=no_such_llm"
    )

    assert exit_code == 2
    assert "no_such_llm" in _error_line(output)


def test_checkpoint_that_does_not_fit_its_card_is_one_line(
    cli: Callable[..., tuple[int, str]], cache_dir: Path, stage2_manifests: Path, tmp_path: Path
) -> None:
    cards_dir = tmp_path / "cards"
    cards_dir.mkdir()

    # A mapper card whose checkpoint is the speech encoder's.
    card = {
        "name": "speechmapper_bad_input_misfit",
        "base": TINY_MAPPER_CARD,
        "checkpoint": str(cache_dir / "tiny" / "wav2vec2.pt"),
    }

    (cards_dir / "misfit.yaml").write_text(yaml.safe_dump(card), encoding="utf-8")

    dataset = _dataset(stage2_manifests, valid_split="train")

    config = _evaluate_config(
        tmp_path, "speechmapper_bad_input_misfit", dataset, assets={"extra_paths": [str(cards_dir)]}
    )

    exit_code, output = cli("evaluate", str(tmp_path / "eval"), "--config-file", str(config))

    assert exit_code == 2, output[-3000:]
    assert "speechmapper_bad_input_misfit" in _error_line(output)
    assert "wav2vec2.pt" in _error_line(output)


def test_mapper_pretrained_for_another_llm_is_one_line(
    cli: Callable[..., tuple[int, str]], stage2_manifests: Path, tmp_path: Path
) -> None:
    config = _instruct_config(tmp_path, _dataset(stage2_manifests))

    exit_code, output = cli(
        "instruct", str(tmp_path / "it"), "--config-file", str(config), "--config", f"speech_llm.llm={TINY_QWEN_CARD}"
    )

    assert exit_code == 2
    assert f"pretrained against the embeddings of `{TINY_LLAMA_CARD}`" in _error_line(output)


@pytest.mark.parametrize(
    ("override", "field"),
    [("dataset.on_bad_sample=sometimes", "on_bad_sample"), ("dataset.min_duration=-1", "min_duration")],
)
def test_bad_dataset_value_is_one_line_before_any_model_loads(
    cli: Callable[..., tuple[int, str]], tmp_path: Path, override: str, field: str
) -> None:
    config = _pretrain_config(tmp_path, _dataset(tmp_path / "nowhere"))

    # Neither the card nor the manifests exist: reaching them would fail otherwise.
    exit_code, output = cli(
        "pretrain", str(tmp_path / "out"), "--config-file", str(config), "--config", override, "llm.name=no_such_llm"
    )

    assert exit_code == 2

    error = _error_line(output)

    assert field in error and "no_such_llm" not in output and "nowhere" not in error, error


def test_auxiliary_ctc_needs_a_mapper_with_its_head_and_trains_with_one(
    cli: Callable[..., tuple[int, str]], audio_dir: Path, tmp_path: Path
) -> None:
    manifest = _write_manifest(tmp_path / "manifests", "train", audio_dir, [])

    config = _pretrain_config(tmp_path, _dataset(manifest.parent), num_steps=2)

    exit_code, output = cli(
        "pretrain", str(tmp_path / "no_head"), "--config-file", str(config), "--config", "loss.ctc_weight=1.0"
    )

    assert exit_code == 2
    assert "has no CTC head" in _error_line(output)

    exit_code, output = cli(
        "pretrain", str(tmp_path / "head"), "--config-file", str(config),
        "--config", "loss.ctc_weight=1.0", "model.config_overrides={ctc_block: 0}",
    )  # fmt: skip

    assert exit_code == 0, output[-3000:]

    ctc_losses = [entry["CTC Loss (Auxiliary)"] for entry in _metrics(tmp_path / "head", "train")]

    assert len(ctc_losses) == 2 and all(0.0 < float(value) < 100.0 for value in ctc_losses)
