"""The stage-1 recipe end to end on tiny random-weight models through the
command line: training, checkpoints and metrics, the generated mapper card,
resuming after SIGKILL, two ranks under torchrun (bad input: test_bad_input.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD, TINY_SPEECH_ENCODER_CARD

VENV_BIN = Path(sys.executable).parent

SENTENCES = ["hello world", "the cat sat", "a red boat", "good morning", "blue sky", "one two three"]


def _write_corpus(corpus_dir: Path) -> None:
    rng = np.random.default_rng(0)

    corpus_dir.mkdir(parents=True, exist_ok=True)

    for split, count in (("train", 12), ("dev", 4)):
        entries = []

        for i in range(count):
            seconds = 1.5 + 0.25 * (i % 4)

            audio = corpus_dir / f"{split}_{i}.wav"

            soundfile.write(audio, (0.1 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32), 16_000)

            entries.append({"audio_filepath": audio.name, "duration": seconds, "text": SENTENCES[i % len(SENTENCES)]})

        (corpus_dir / f"{split}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")


def _write_config(path: Path, corpus_dir: Path, *, num_steps: int, checkpoint_every: int = 2) -> Path:
    config = {
        "model": {"family": "speechmapper", "arch": "tiny"},
        "speech_encoder": {"name": TINY_SPEECH_ENCODER_CARD, "layer": 2},
        "llm": {"name": TINY_LLAMA_CARD},
        "dataset": {
            "name": None,
            "manifest_dir": str(corpus_dir),
            "train_split": "train",
            "valid_split": "dev",
            "max_duration": 4.0,
            "max_batch_seconds": 8.0,
            "max_batch_size": 4,
            "sort_window": 12,
            "num_parallel_calls": 1,
        },
        "trainer": {"mixed_precision": {"mode": "off"}},
        "optimizer": {"name": "adamw", "config": {"lr": 0.001}},
        "lr_scheduler": {"name": "cosine_annealing", "config": {"num_warmup_steps": 1}},
        "regime": {
            "num_steps": num_steps,
            "validate_every_n_steps": checkpoint_every,
            "checkpoint_every_n_steps": checkpoint_every,
            "publish_metrics_every_n_steps": checkpoint_every,
            "keep_last_n_checkpoints": 2,
        },
        "common": {"no_sweep_dir": True, "metric_recorders": {"tensorboard": {"enabled": False}}},
    }

    path.write_text(yaml.safe_dump(config), encoding="utf-8")

    return path


def _env(cache_dir: Path) -> dict[str, str]:
    env = {**os.environ, "FAIRSEQ2_SPEECHMAPPER_CACHE_DIR": str(cache_dir), "FAIRSEQ2_NO_PROGRESS": "1"}

    env.pop("FAIRSEQ2_SPEECHMAPPER_TRACEBACK", None)

    return env


def _pretrain_command(output_dir: Path, config_file: Path, *extra: str) -> list[str]:
    return [
        str(VENV_BIN / "fairseq2"),
        "speechmapper",
        "pretrain",
        str(output_dir),
        "--config-file",
        str(config_file),
        "--no-rich",
        *extra,
    ]


def _train_steps(output_dir: Path) -> list[int]:
    lines = (output_dir / "metrics" / "train.jsonl").read_text(encoding="utf-8").splitlines()

    return [json.loads(line)["Step"] for line in lines]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus")

    _write_corpus(path)

    return path


@pytest.mark.slow
def test_pretrain_trains_validates_checkpoints_and_writes_a_loadable_card(
    cache_dir: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    output_dir = tmp_path / "tiny_run"

    config_file = _write_config(tmp_path / "config.yaml", corpus_dir, num_steps=4)

    result = subprocess.run(
        _pretrain_command(output_dir, config_file), capture_output=True, text=True, env=_env(cache_dir), timeout=600
    )

    assert result.returncode == 0, result.stderr[-3000:]

    assert _train_steps(output_dir) == [2, 4]
    assert (output_dir / "checkpoints" / "step_4" / "model").is_dir()

    valid = [json.loads(line) for line in (output_dir / "metrics" / "valid.jsonl").read_text().splitlines()]

    for name in ("Loss", "Word Distance", "Pad Distance", "Cosine", "Token Error Rate", "Word Error Rate (WER)"):
        assert name in valid[-1], name

    card = yaml.safe_load((cache_dir / "cards" / "speechmapper_tiny_run.yaml").read_text())

    assert card["checkpoint"] == str(output_dir / "checkpoints" / "step_4" / "model")
    assert (card["speech_encoder"], card["speech_encoder_layer"], card["llm"]) == (
        TINY_SPEECH_ENCODER_CARD,
        2,
        TINY_LLAMA_CARD,
    )
    assert isinstance(card["pad_token_id"], int)

    # Later stages load the trained mapper by name through fairseq2's model hub.
    info = subprocess.run(
        [str(VENV_BIN / "fairseq2"), "speechmapper", "model-info", "speechmapper_tiny_run"],
        capture_output=True,
        text=True,
        env=_env(cache_dir),
        timeout=300,
    )

    assert info.returncode == 0, info.stderr[-2000:]
    assert TINY_LLAMA_CARD in info.stdout

    # The stage-1 evaluation finds the speech encoder, layer, LLM and pad token in the card.
    eval_dir = tmp_path / "eval"

    evaluation = subprocess.run(
        [
            str(VENV_BIN / "fairseq2"),
            "speechmapper",
            "evaluate",
            str(eval_dir),
            "--stage1",
            "--no-rich",
            "--config",
            "model.name=speechmapper_tiny_run",
            "dataset.name=null",
            f"dataset.manifest_dir={corpus_dir}",
            "dataset.valid_split=dev",
        ],
        capture_output=True,
        text=True,
        env=_env(cache_dir),
        timeout=300,
    )

    assert evaluation.returncode == 0, evaluation.stderr[-3000:]

    scores = json.loads((eval_dir / "metrics" / "eval.jsonl").read_text().splitlines()[-1])

    assert scores["Number of Examples"] == 4
    assert 0.0 <= scores["Word Token Accuracy"] <= 100.0

    hypotheses = [
        json.loads(line) for line in (eval_dir / "hypotheses" / "stage1.rank_0.jsonl").read_text().splitlines()
    ]

    assert sorted(h["reference"] for h in hypotheses) == sorted(SENTENCES[i % len(SENTENCES)] for i in range(4))


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(cache_dir: Path, corpus_dir: Path, tmp_path: Path) -> None:
    output_dir = tmp_path / "resumed"

    config_file = _write_config(tmp_path / "config.yaml", corpus_dir, num_steps=40)

    command = _pretrain_command(output_dir, config_file)

    process = subprocess.Popen(command, env=_env(cache_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    deadline = time.monotonic() + 300

    try:
        while not (output_dir / "checkpoints" / "step_4").is_dir():
            assert process.poll() is None, "the run ended before its second checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"

            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    result = subprocess.run(command, capture_output=True, text=True, env=_env(cache_dir), timeout=600)

    assert result.returncode == 0, result.stderr[-3000:]

    log = (output_dir / "logs" / "rank_0.log").read_text(encoding="utf-8")

    assert "Restoring training from the last checkpoint" in log or "Restoring" in log

    steps = _train_steps(output_dir)

    assert steps[-1] == 40
    assert (output_dir / "checkpoints" / "step_40").is_dir()


@pytest.mark.slow
def test_two_ranks_under_torchrun_read_disjoint_shards(cache_dir: Path, corpus_dir: Path, tmp_path: Path) -> None:
    output_dir = tmp_path / "ddp"

    config_file = _write_config(tmp_path / "config.yaml", corpus_dir, num_steps=2)

    command = [
        str(VENV_BIN / "torchrun"),
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "fairseq2_speechmapper",
        "speechmapper",
        "pretrain",
        str(output_dir),
        "--config-file",
        str(config_file),
        "--no-rich",
        "--config",
        "dataset.log_shard=true",
        # One sort window is one epoch of a rank's shard (6 utterances, 2
        # batches), and batches are not shuffled across windows: both steps
        # read epoch 1.
        "dataset.sort_window=6",
        "dataset.batch_shuffle_window=1",
    ]

    result = subprocess.run(command, capture_output=True, text=True, env=_env(cache_dir), timeout=600)

    assert result.returncode == 0, result.stderr[-3000:]

    shards = []

    for rank in (0, 1):
        log = (output_dir / "logs" / f"rank_{rank}.log").read_text(encoding="utf-8")

        ids = [
            json.loads(line[line.index("reads shard ") + len("reads shard ") :])
            for line in log.splitlines()
            if "reads shard" in line and "`train`" in line
        ]

        shards.append({i for batch_ids in ids for i in batch_ids})

    assert len(shards[0]) == len(shards[1]) == 6
    assert shards[0].isdisjoint(shards[1])


def test_validating_at_start_without_a_validation_split_is_a_config_error(
    cache_dir: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    config_file = _write_config(tmp_path / "config.yaml", corpus_dir, num_steps=2)

    command = _pretrain_command(
        tmp_path / "out", config_file, "--config", "dataset.valid_split=null", "regime.validate_at_start=true"
    )

    result = subprocess.run(command, capture_output=True, text=True, env=_env(cache_dir), timeout=300)

    assert result.returncode == 2
    assert (
        "`dataset.valid_split` is null, so there is nothing to validate on: set `regime.validate_at_start=false`."
        in result.stderr
    )


def test_preset_and_config_file_are_exclusive(cache_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(VENV_BIN / "fairseq2"),
            "speechmapper",
            "pretrain",
            str(tmp_path),
            "--preset",
            "paper",
            "--config-file",
            "x.yaml",
        ],
        capture_output=True,
        text=True,
        env=_env(cache_dir),
        timeout=300,
    )

    assert result.returncode == 2
    assert "Give either --preset or --config-file" in result.stderr


def test_paper_preset_dumps_the_papers_settings(cache_dir: Path) -> None:
    result = subprocess.run(
        [str(VENV_BIN / "fairseq2"), "speechmapper", "pretrain", "--preset", "paper", "--dump-config"],
        capture_output=True,
        text=True,
        env=_env(cache_dir),
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-2000:]

    config = yaml.safe_load(result.stdout)

    assert config["model"]["arch"] == "paper_llama3_8b"
    assert (config["speech_encoder"]["name"], config["speech_encoder"]["layer"]) == ("w2vbert2_600m", 24)
    assert config["llm"]["name"] == "llama3_1_8b_instruct"
    assert config["optimizer"]["config"]["lr"] == 1e-4
    assert config["lr_scheduler"]["config"]["num_warmup_steps"] == 100_000
    assert config["regime"]["num_steps"] == 2_000_000
    assert (config["loss"]["alpha"], config["loss"]["gamma"]) == (5.0, 100.0)


def test_the_logged_data_epoch_counts_passes_over_the_split(cache_dir: Path, corpus_dir: Path, tmp_path: Path) -> None:
    """A data epoch is one pass over the training split: the trainer's
    ``Data Epoch`` moves on after as many steps as a pass has batches."""
    from fairseq2.gang import create_fake_gangs

    from fairseq2_speechmapper.datasets import SpeechManifestDataset, SpeechReadOptions

    output_dir = tmp_path / "epochs"

    config_file = _write_config(tmp_path / "config.yaml", corpus_dir, num_steps=10, checkpoint_every=10)

    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["regime"]["publish_metrics_every_n_steps"] = 1
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = subprocess.run(
        _pretrain_command(output_dir, config_file), capture_output=True, text=True, env=_env(cache_dir), timeout=600
    )

    assert result.returncode == 0, result.stderr[-3000:]

    lines = [json.loads(line) for line in (output_dir / "metrics" / "train.jsonl").read_text().splitlines()]

    # A step met again at a pass's end (fairseq2 runs its post-step hooks
    # again there) logs the same epoch.
    epochs = {line["Step"]: line["Data Epoch"] for line in lines}

    # The batches of one pass, read as the recipe reads them: the sort window
    # spans the split, so their number does not depend on the seed.
    dataset = SpeechManifestDataset({"train": corpus_dir / "train.jsonl"})

    options = SpeechReadOptions(
        **{
            k: v
            for k, v in config["dataset"].items()
            if k in ("max_duration", "max_batch_seconds", "max_batch_size", "sort_window")
        }
    )

    reader = dataset.create_reader(
        "train",
        create_fake_gangs(torch.device("cpu")),
        options,
        prepare_input=lambda waveform, sample_rate: waveform,
        encode_text=lambda text: torch.tensor([1]),
        training=True,
        seed=2,
    )

    num_batches = sum(len(batches) for batches in reader)

    assert 2 < num_batches < 10

    assert epochs == {step: 1 + (step - 1) // num_batches for step in range(1, 11)}
