"""Faults, each with the outcome the README promises: a SIGKILL while a
checkpoint is written, a damaged checkpoint or feature-cache shard, a full disk
under a checkpoint or a shard, a NaN loss; and untrusted files never run code.

On tiny random-weight models, 1-3 steps; in process except the SIGKILL."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from safetensors import SafetensorError, safe_open

import fairseq2.file_system as fairseq2_file_system
from fairseq2.model_checkpoint import CorruptModelCheckpointError
from fairseq2.recipe import run
from fairseq2.recipe.config import RegimeSection

from fairseq2_speechmapper.cli import main
from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD, TINY_SPEECH_ENCODER_CARD
from fairseq2_speechmapper.errors import FileWriteError
from fairseq2_speechmapper.features import FeatureCache, FeatureCacheError
from fairseq2_speechmapper.features import writer as shard_writer
from fairseq2_speechmapper.models.speechmapper import get_speechmapper_model_hub
from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection
from fairseq2_speechmapper.recipe_support.faults import NonFiniteStepGuard
from fairseq2_speechmapper.recipes.extract_features.config import ExtractFeaturesConfig
from fairseq2_speechmapper.recipes.extract_features.recipe import ExtractFeaturesRecipe
from fairseq2_speechmapper.recipes.pretrain import units as pretrain_units

REPO = Path(__file__).resolve().parents[1]

MODEL_FILE = Path("model/pp_00/tp_00/sdp_00.pt")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fault_corpus")

    rng = np.random.default_rng(0)

    for split, count in (("train", 6), ("dev", 2)):
        lines = []

        for i in range(count):
            seconds = 1.0 + 0.25 * (i % 3)

            audio = path / f"{split}_{i}.wav"

            soundfile.write(audio, (0.1 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32), 16_000)

            lines.append(json.dumps({"audio_filepath": audio.name, "duration": seconds, "text": "hello world"}) + "\n")

        (path / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")

    return path


def _dataset(corpus_dir: Path) -> dict[str, object]:
    return {
        "name": None,
        "manifest_dir": str(corpus_dir),
        "train_split": "train",
        "valid_split": None,
        "max_duration": 4.0,
        "max_batch_seconds": 8.0,
        "max_batch_size": 4,
        "sort_window": 6,
        "num_parallel_calls": 1,
    }


def _pretrain_config(path: Path, corpus_dir: Path, *, num_steps: int) -> Path:
    """Stage 1 on the tiny models, a checkpoint every step."""
    config = {
        "model": {"family": "speechmapper", "arch": "tiny"},
        "speech_encoder": {"name": TINY_SPEECH_ENCODER_CARD, "layer": 2},
        "llm": {"name": TINY_LLAMA_CARD},
        "dataset": _dataset(corpus_dir),
        "trainer": {"mixed_precision": {"mode": "off"}},
        "regime": {"num_steps": num_steps, "checkpoint_every_n_steps": 1, "publish_metrics_every_n_steps": 1},
        "common": {"no_sweep_dir": True, "metric_recorders": {"tensorboard": {"enabled": False}}},
    }

    path.write_text(yaml.safe_dump(config), encoding="utf-8")

    return path


def _cli(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``fairseq2 speechmapper ARGS`` in this process: its exit code and output."""
    capfd.readouterr()

    with pytest.raises(SystemExit) as exit_info:
        main(["speechmapper", *args, "--no-rich"])

    captured = capfd.readouterr()

    code = exit_info.value.code

    return code if isinstance(code, int) else 1, captured.out + captured.err


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "ERROR" in line or line.startswith("error:")]


def _steps(checkpoint_dir: Path) -> list[str]:
    return sorted(p.name for p in checkpoint_dir.glob("step_*"))


@pytest.fixture(scope="module")
def trained_run(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step stage-1 run with checkpoints at steps 1 and 2."""
    tmp_path = tmp_path_factory.mktemp("trained")

    output_dir = tmp_path / "trained"

    config_file = _pretrain_config(tmp_path / "config.yaml", corpus_dir, num_steps=2)

    with pytest.raises(SystemExit) as exit_info:
        main(["speechmapper", "pretrain", str(output_dir), "--config-file", str(config_file), "--no-rich"])

    assert exit_info.value.code == 0

    assert _steps(output_dir / "checkpoints") == ["step_1", "step_2"]

    return output_dir


# SIGKILL while a checkpoint is written ---------------------------------------

# Writes the model file of step 2 half, then kills the process: the worst moment.
_KILLER = """
import os, signal, sys
import fairseq2.io as fairseq2_io
from fairseq2_speechmapper.cli import main

dump = fairseq2_io._TorchTensorFileDumper.dump

def dump_then_die(self, data, file, options=None):
    dump(self, data, file, options)
    if "step_2.tmp" in str(file) and "model" in str(file):
        with open(file, "r+b") as fp:
            fp.truncate(os.path.getsize(file) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

fairseq2_io._TorchTensorFileDumper.dump = dump_then_die
main(sys.argv[1:])
"""


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_one_before(
    corpus_dir: Path, cache_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    output_dir = tmp_path / "killed"

    config_file = _pretrain_config(tmp_path / "config.yaml", corpus_dir, num_steps=3)

    command = ["speechmapper", "pretrain", str(output_dir), "--config-file", str(config_file), "--no-rich"]

    env = {**os.environ, "FAIRSEQ2_SPEECHMAPPER_CACHE_DIR": str(cache_dir), "FAIRSEQ2_NO_PROGRESS": "1"}

    killed = subprocess.run(
        [sys.executable, "-c", _KILLER, *command], capture_output=True, text=True, env=env, timeout=300, check=False
    )

    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    checkpoint_dir = output_dir / "checkpoints"

    # Step 2 was left half-written, in its temporary directory only.
    assert _steps(checkpoint_dir) == ["step_1", "step_2.tmp"]

    # The mapper's card still names step 1, which loads.
    card = yaml.safe_load((cache_dir / "cards" / "speechmapper_killed.yaml").read_text(encoding="utf-8"))

    assert card["checkpoint"] == str(checkpoint_dir / "step_1" / "model")

    # The same command again resumes from step 1, never reading the half-written step 2.
    code, output = _cli(capfd, *command[1:-1])

    assert code == 0, output[-3000:]
    assert "Restoring training from the last checkpoint at step 1." in output

    assert _steps(checkpoint_dir) == ["step_1", "step_2", "step_3"]

    torch.load(checkpoint_dir / "step_2" / MODEL_FILE, weights_only=True)


# A damaged checkpoint --------------------------------------------------------


def _truncate(path: Path) -> None:
    with path.open("r+b") as fp:
        fp.truncate(path.stat().st_size // 2)


def test_a_damaged_checkpoint_is_one_line_naming_it(
    trained_run: Path, corpus_dir: Path, cache_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    output_dir = tmp_path / "damaged"

    shutil.copytree(trained_run, output_dir)

    damaged = output_dir / "checkpoints" / "step_2" / MODEL_FILE

    _truncate(damaged)

    config_file = _pretrain_config(tmp_path / "config.yaml", corpus_dir, num_steps=3)

    # Resuming from it.
    code, output = _cli(capfd, "pretrain", str(output_dir), "--config-file", str(config_file))

    assert code == 2
    assert "Traceback" not in output

    [error] = _error_lines(output)

    assert f"{damaged} of step 2 is not a valid checkpoint file." in error
    assert f"move {output_dir / 'checkpoints' / 'step_2'} away" in error

    # Loading it through its card, as a mapper to evaluate.
    card = yaml.safe_load((cache_dir / "cards" / "speechmapper_trained.yaml").read_text(encoding="utf-8"))

    card["name"], card["checkpoint"] = "speechmapper_damaged", str(damaged.parents[2])

    (cache_dir / "cards" / "speechmapper_damaged.yaml").write_text(yaml.safe_dump(card), encoding="utf-8")

    code, output = _cli(
        capfd,
        "evaluate",
        str(tmp_path / "eval"),
        "--stage1",
        "--config",
        "model.name=speechmapper_damaged",
        f"dataset.manifest_dir={corpus_dir}",
        "dataset.valid_split=dev",
    )

    assert code == 2

    assert "Traceback" not in output

    [error] = _error_lines(output)

    assert f"{damaged}: the checkpoint file is truncated or damaged" in error


# A NaN loss ------------------------------------------------------------------


def test_a_nan_loss_stops_the_run_before_the_weights_change(
    corpus_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sum_kept_loss, calls = pretrain_units.sum_kept_loss, []

    def nan_at_second_batch(*args: object, **kwargs: object) -> tuple[torch.Tensor, int]:
        loss, num_kept = sum_kept_loss(*args, **kwargs)  # type: ignore[arg-type]

        calls.append(loss)

        return (loss * float("nan") if len(calls) == 2 else loss), num_kept

    monkeypatch.setattr(pretrain_units, "sum_kept_loss", nan_at_second_batch)

    output_dir = tmp_path / "nan"

    config_file = _pretrain_config(tmp_path / "config.yaml", corpus_dir, num_steps=3)

    code, output = _cli(capfd, "pretrain", str(output_dir), "--config-file", str(config_file))

    assert code == 2
    assert "Traceback" not in output

    [error] = _error_lines(output)

    assert "Step 2: the loss is nan on the batch of " in error and "the step was not taken" in error

    # Step 1's checkpoint holds finite weights; none holds step 2.
    assert _steps(output_dir / "checkpoints") == ["step_1"]

    state = torch.load(output_dir / "checkpoints" / "step_1" / MODEL_FILE, weights_only=True)

    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_a_fused_optimizer_skips_a_nan_step_on_the_device_and_the_run_stops_at_the_next_read(
    corpus_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No per-step read: the step is skipped on the device (fused AdamW's
    `found_inf`), the flags are read at the metric and checkpoint interval."""
    sum_kept_loss, calls = pretrain_units.sum_kept_loss, []

    def inf_at_third_batch(*args: object, **kwargs: object) -> tuple[torch.Tensor, int]:
        loss, num_kept = sum_kept_loss(*args, **kwargs)  # type: ignore[arg-type]

        calls.append(loss)

        return (loss * float("inf") if len(calls) == 3 else loss), num_kept

    monkeypatch.setattr(pretrain_units, "sum_kept_loss", inf_at_third_batch)

    output_dir = tmp_path / "inf"

    config_file = _pretrain_config(tmp_path / "config.yaml", corpus_dir, num_steps=6)

    code, output = _cli(
        capfd,
        "pretrain",
        str(output_dir),
        "--config-file",
        str(config_file),
        "--config",
        "optimizer.config.impl=fused",
        "regime.checkpoint_every_n_steps=2",
        "regime.publish_metrics_every_n_steps=2",
    )

    assert code == 2
    assert "Traceback" not in output

    [error] = _error_lines(output)

    assert "Step 3: the loss is inf on the batch of " in error
    assert "the step was not taken and the run stopped at step 4, and no checkpoint holds it" in error

    # Step 4 ran on the weights step 3 left alone (an update from an infinite
    # loss would have made them NaN); its checkpoint was never written.
    assert len(calls) == 4 and torch.isfinite(calls[3]).all()
    assert _steps(output_dir / "checkpoints") == ["step_2"]

    state = torch.load(output_dir / "checkpoints" / "step_2" / MODEL_FILE, weights_only=True)

    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_the_nan_flags_are_read_at_every_step_that_may_publish_or_save() -> None:
    read_at = NonFiniteStepGuard.read_at_regime(
        RegimeSection(
            num_steps=12, checkpoint_every_n_steps=4, publish_metrics_every_n_steps=3, validate_every_n_steps=5
        )
    )

    assert [step_nr for step_nr in range(1, 13) if read_at(step_nr)] == [3, 4, 5, 6, 8, 9, 10, 12]

    # Where a checkpoint follows the data epochs, at every step.
    read_at = NonFiniteStepGuard.read_at_regime(RegimeSection(num_steps=12, checkpoint_every_n_data_epochs=1))

    assert all(read_at(step_nr) for step_nr in range(1, 13))


# A full disk under a checkpoint ----------------------------------------------


class _FullDisk:
    """A file that takes ``capacity`` bytes, then fails like a full disk."""

    def __init__(self, fp: object, capacity: int) -> None:
        self._fp = fp
        self._capacity = capacity

    def write(self, data: bytes) -> int:
        if len(data) > self._capacity:
            self._fp.write(data[: self._capacity])  # type: ignore[attr-defined]

            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self._capacity -= len(data)

        return self._fp.write(data)  # type: ignore[attr-defined, no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._fp, name)


@pytest.fixture
def disk_full_at_step_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every checkpoint file of step 2 fails after 1 KiB."""
    for kls in (fairseq2_file_system.FSspecFileSystem, fairseq2_file_system.NativeLocalFileSystem):
        open_file = kls.open

        def open_full(self: object, path: Path, mode: object = None, *, _open: object = open_file) -> object:
            fp = _open(self, path) if mode is None else _open(self, path, mode)  # type: ignore[operator]

            if mode == fairseq2_file_system.FileMode.WRITE and "step_2.tmp" in str(path):
                return _FullDisk(fp, capacity=1024)

            return fp

        monkeypatch.setattr(kls, "open", open_full)


@pytest.mark.usefixtures("disk_full_at_step_2")
def test_a_full_disk_under_a_checkpoint_is_one_line_and_leaves_no_half_checkpoint(
    corpus_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    output_dir = tmp_path / "full"

    config_file = _pretrain_config(tmp_path / "config.yaml", corpus_dir, num_steps=3)

    code, output = _cli(capfd, "pretrain", str(output_dir), "--config-file", str(config_file))

    assert code == 2, output[-3000:]
    assert "Traceback" not in output

    [error] = _error_lines(output)

    assert f"A checkpoint could not be written to {output_dir / 'checkpoints'}" in error
    assert "is the disk full?" in error and "removed the unfinished step_2.tmp;" in error

    assert _steps(output_dir / "checkpoints") == ["step_1"]


# A damaged or truncated feature-cache shard, and a full disk under one -------


def _extract(output_dir: Path, corpus_dir: Path) -> None:
    config = ExtractFeaturesConfig()

    config.speech_encoder.name = TINY_SPEECH_ENCODER_CARD
    config.speech_encoder.layer = 2
    config.dataset = SpeechDatasetSection(
        name=None,
        manifest_dir=corpus_dir,
        valid_split="dev",
        max_duration=4.0,
        max_batch_seconds=8.0,
        max_batch_size=4,
        num_parallel_calls=1,
    )
    config.storage.shard_size = 2
    config.common.metric_recorders.tensorboard.enabled = False

    run(ExtractFeaturesRecipe(), config, output_dir, no_rich=True)


def _features(cache_dir: Path, shard: str) -> torch.Tensor:
    with safe_open(str(cache_dir / "splits" / "train" / shard), framework="pt") as fp:
        # A copy: the file is memory-mapped, and the test truncates it.
        return fp.get_tensor("features").clone()


@pytest.fixture(scope="module")
def extracted(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output_dir = tmp_path_factory.mktemp("extracted") / "cache"

    _extract(output_dir, corpus_dir)

    return output_dir


def test_a_damaged_shard_is_one_line_and_extraction_again_repairs_it(
    extracted: Path, corpus_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cache_dir = tmp_path / "cache"

    shutil.copytree(extracted, cache_dir)

    train_dir = cache_dir / "splits" / "train"

    original = _features(cache_dir, "shard_00000.safetensors")

    # A truncated features file, and a garbled index.
    _truncate(train_dir / "shard_00000.safetensors")

    (train_dir / "shard_00001.jsonl").write_bytes(b"\x00garbage{")

    with pytest.raises(FeatureCacheError) as error_info:
        FeatureCache.open(cache_dir).read_split("train")

    message = str(error_info.value)

    assert "\n" not in message
    assert message.startswith(f"{train_dir / 'shard_00000.safetensors'}: cannot be read as a feature shard")
    assert "run `extract-features` on its cache again" in message

    assert "not a valid shard index" in str(FeatureCache.open(cache_dir).shard_problem("train", 1))

    capfd.readouterr()

    _extract(cache_dir, corpus_dir)

    log = capfd.readouterr().err

    assert "Split `train`: extracting shard_00000 again." in log
    assert "Split `train`: extracting shard_00001 again." in log
    assert "extracting shard_00002 again" not in log

    FeatureCache.open(cache_dir).read_split("train")

    assert torch.equal(_features(cache_dir, "shard_00000.safetensors"), original)


def test_a_full_disk_under_a_shard_is_one_line_and_leaves_no_half_shard(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_file, calls = shard_writer.save_file, []

    def save_then_fill_the_disk(tensors: dict[str, torch.Tensor], filename: str, **kwargs: object) -> None:
        calls.append(filename)

        save_file(tensors, filename, **kwargs)  # type: ignore[arg-type]

        if len(calls) == 2:
            _truncate(Path(filename))

            # What safetensors raises when the disk is full.
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(shard_writer, "save_file", save_then_fill_the_disk)

    cache_dir = tmp_path / "cache"

    with pytest.raises(FileWriteError) as error_info:
        _extract(cache_dir, corpus_dir)

    train_dir = cache_dir / "splits" / "train"

    assert str(error_info.value) == (
        f"{train_dir / 'shard_00001.safetensors'}: cannot be written (Error while serializing: I/O error: No space "
        "left on device (os error 28)); no half-written file is left."
    )

    assert sorted(p.name for p in train_dir.iterdir()) == ["plan.json", "shard_00000.jsonl", "shard_00000.safetensors"]

    # Space freed: the same extraction finishes the split.
    monkeypatch.setattr(shard_writer, "save_file", save_file)

    _extract(cache_dir, corpus_dir)

    FeatureCache.open(cache_dir).read_split("train")


# Untrusted files -------------------------------------------------------------


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, ("open(__import__('os').environ['MARKER'], 'w').close()",))


def test_a_checkpoint_with_code_in_it_is_refused_without_running_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "code_ran"

    monkeypatch.setenv("MARKER", str(marker))

    hub = get_speechmapper_model_hub()

    config = hub.get_arch_config("tiny")

    checkpoint = tmp_path / "mapper.pt"

    state = hub.create_new_model(config, device=torch.device("cpu")).state_dict()

    with checkpoint.open("wb") as fp:
        pickle.dump({"model": state, "payload": _RunsCode()}, fp)

    with pytest.raises(CorruptModelCheckpointError) as error_info:
        hub.load_custom_model(checkpoint, config, device=torch.device("cpu"))

    causes = []

    cause: BaseException | None = error_info.value
    while cause is not None:
        causes.append(cause)

        cause = cause.__cause__

    # Refused by the weights-only unpickler, before anything ran.
    assert any(isinstance(c, pickle.UnpicklingError) and "Weights only load failed" in str(c) for c in causes)

    assert not marker.exists()


def _source_files() -> Iterator[Path]:
    for folder in ("fairseq2_speechmapper", "recipes", "assets"):
        yield from (p for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".yaml"))


def test_no_file_is_read_with_code_execution_and_no_card_trusts_remote_code() -> None:
    for path in _source_files():
        text = path.read_text(encoding="utf-8")

        for line_nr, line in enumerate(text.splitlines(), start=1):
            if "torch.load(" in line and "``" not in line:
                assert "weights_only=True" in line, f"{path}:{line_nr}"

            assert "trust_remote_code" not in line, f"{path}:{line_nr}"
            assert "restrict: false" not in line.replace(" ", " ").lower(), f"{path}:{line_nr}"
            assert "pickle.load" not in line, f"{path}:{line_nr}"
