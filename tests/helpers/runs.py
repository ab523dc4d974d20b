"""Runs the resume and multi-rank fault tests share: a tiny corpus, the
recipes' configs on the tiny models with dropout, the killer's environment,
and the comparison of a resumed run with the run never stopped."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import soundfile
import torch
import yaml

from fairseq2.recipe import run

from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD, TINY_MAPPER_CARD, TINY_SPEECH_ENCODER_CARD
from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection
from fairseq2_speechmapper.recipes.extract_features.config import ExtractFeaturesConfig
from fairseq2_speechmapper.recipes.extract_features.recipe import ExtractFeaturesRecipe

KILLER = Path(__file__).parent / "kill_at_step.py"

NUM_STEPS = 6

KILL_AT_STEP = 5

MODEL_FILE = Path("model/pp_00/tp_00/sdp_00.pt")

SENTENCES = ["hello world", "the cat sat", "a red boat", "good morning"]


def write_corpus(path: Path, *, num_utterances: int = 8) -> Path:
    """Noise "speech" with transcripts and translations: more utterances than
    the run's batches before the kill, fewer than all of its batches, so the
    resumed run crosses an epoch."""
    rng = np.random.default_rng(0)

    lines = []

    for i in range(num_utterances):
        seconds = 1.0 + 0.25 * (i % 4)

        audio = path / f"train_{i}.wav"

        soundfile.write(audio, (0.1 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32), 16_000)

        record = {
            "audio_filepath": audio.name,
            "duration": seconds,
            "text": SENTENCES[i % len(SENTENCES)],
            "translation": "die katze",
            "tgt_lang": "de",
        }

        lines.append(json.dumps(record) + "\n")

    (path / "train.jsonl").write_text("".join(lines), encoding="utf-8")

    return path


def dataset_config(corpus_dir: Path | None, feature_cache: Path | None = None) -> dict[str, object]:
    return {
        "name": None,
        "manifest_dir": None if corpus_dir is None else str(corpus_dir),
        "feature_cache": None if feature_cache is None else str(feature_cache),
        "train_split": "train",
        "valid_split": None,
        "max_duration": 2.0,
        "max_batch_seconds": 3.0,
        "max_batch_size": 2,
        "sort_window": 8,
        "num_parallel_calls": 1,
    }


def write_config(path: Path, recipe: str, dataset: dict[str, object], **regime: object) -> Path:
    """``recipe`` on the tiny models with dropout: AdamW, a warmed-up cosine
    schedule, a checkpoint every 2 steps, metrics every step."""
    config: dict[str, object] = {
        "dataset": dataset,
        "trainer": {"mixed_precision": {"mode": "off"}},
        "optimizer": {"name": "adamw", "config": {"lr": 0.001}},
        "lr_scheduler": {"name": "cosine_annealing", "config": {"num_warmup_steps": 2}},
        "regime": {
            "num_steps": NUM_STEPS,
            "checkpoint_every_n_steps": 2,
            "publish_metrics_every_n_steps": 1,
            "keep_last_n_checkpoints": 1,
            **regime,
        },
        "common": {"no_sweep_dir": True, "metric_recorders": {"tensorboard": {"enabled": False}}},
    }

    if recipe == "pretrain":
        config["model"] = {"family": "speechmapper", "arch": "tiny", "config_overrides": {"dropout_p": 0.1}}
        config["speech_encoder"] = {"name": TINY_SPEECH_ENCODER_CARD, "layer": 2}
        config["llm"] = {"name": TINY_LLAMA_CARD}
    else:
        config["model"] = {"name": TINY_MAPPER_CARD}
        config["task"] = {"task": "st", "asr_mix_prob": 0.5}
        config["loss"] = {"sigma": 0.5}
        config["lora"] = {"enabled": True, "dropout_p": 0.1}

    path.write_text(yaml.safe_dump(config), encoding="utf-8")

    return path


def extract_features(output_dir: Path, corpus_dir: Path) -> Path:
    config = ExtractFeaturesConfig()

    config.speech_encoder.name = TINY_SPEECH_ENCODER_CARD
    config.speech_encoder.layer = 2
    config.dataset = SpeechDatasetSection(**{**dataset_config(corpus_dir), "manifest_dir": corpus_dir})  # type: ignore[arg-type]
    config.storage.shard_size = 4
    config.common.metric_recorders.tensorboard.enabled = False

    run(ExtractFeaturesRecipe(), config, output_dir, no_rich=True)

    return output_dir


def killer_env(cache_dir: Path, **kill: str) -> dict[str, str]:
    env = {**os.environ, "FAIRSEQ2_SPEECHMAPPER_CACHE_DIR": str(cache_dir), "FAIRSEQ2_NO_PROGRESS": "1", **kill}

    env.pop("FAIRSEQ2_SPEECHMAPPER_TRACEBACK", None)

    return env


def final_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(
        output_dir / "checkpoints" / f"step_{NUM_STEPS}" / MODEL_FILE, weights_only=True
    )

    return state


def train_metrics(output_dir: Path) -> dict[int, dict[str, object]]:
    """Each step's logged metrics (loss, learning rate, batch size, gradient
    norm, ...) less the timings."""
    lines = (output_dir / "metrics" / "train.jsonl").read_text(encoding="utf-8").splitlines()

    metrics = {}

    for line in map(json.loads, lines):
        metrics[line["Step"]] = {k: v for k, v in line.items() if "Time" not in k and "Second" not in k}

    return metrics


def assert_same_run(resumed_dir: Path, reference_dir: Path) -> None:
    reference, resumed = final_weights(reference_dir), final_weights(resumed_dir)

    assert reference.keys() == resumed.keys()

    different = [name for name, weight in reference.items() if not torch.equal(weight, resumed[name])]

    assert not different, f"{len(different)} of {len(reference)} tensors differ, e.g. {different[:3]}"

    # The same batches (loss, batch size) under the same learning rates, before
    # and after the kill: the resumed run logs the steps from the kill on.
    reference_metrics, resumed_metrics = train_metrics(reference_dir), train_metrics(resumed_dir)

    assert sorted(resumed_metrics) == list(range(1, NUM_STEPS + 1))

    for step_nr, metrics in resumed_metrics.items():
        assert metrics == reference_metrics[step_nr], step_nr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))

        port: int = sock.getsockname()[1]

        return port


def torchrun(recipe: str, output_dir: Path, config_file: Path, *extra: str) -> list[str]:
    """``recipe`` on two CPU processes (gloo) under ``torchrun``, through the killer."""
    return [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        str(KILLER),
        "speechmapper",
        recipe,
        str(output_dir),
        "--config-file",
        str(config_file),
        "--no-rich",
        *extra,
    ]


def error_lines(output_dir: Path, rank: int) -> list[str]:
    log = (output_dir / "logs" / f"rank_{rank}.log").read_text(encoding="utf-8")

    return [line for line in log.splitlines() if " ERROR " in line]


def checkpoint_steps(output_dir: Path) -> list[str]:
    return sorted(p.name for p in (output_dir / "checkpoints").glob("step_*"))
