"""Stage 2 through the command line on tiny random-weight models: `instruct`
trains, checkpoints, resumes and writes a speech-LLM card; `evaluate` scores it
on ASR, ST (BLEU/chrF, a real COMET model, language adherence) and spoken QA
(EM/F1, an LLM judge); `generate` answers from audio files; and the errors a
user can cause are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile
import yaml

from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD, TINY_MAPPER_CARD, TINY_QWEN_CARD
from fairseq2_speechmapper.datasets.text import normalize_for_wer

from helpers.tiny_comet import write_tiny_comet_checkpoint

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent

UTTERANCES = [
    ("hello world", "hallo welt", "What is greeted?", ["the world", "world"]),
    ("the cat sat", "die katze sass", "Who sat?", ["the cat"]),
    ("a red boat", "ein rotes boot", "What colour is the boat?", ["red"]),
    ("good morning", "guten morgen", "When is it?", ["morning"]),
]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Noise "speech" with transcripts, German translations and QA pairs."""
    path = tmp_path_factory.mktemp("it_corpus")

    rng = np.random.default_rng(0)

    for split, count in (("train", 8), ("dev", 4)):
        lines = []

        for i in range(count):
            text, translation, question, answers = UTTERANCES[i % len(UTTERANCES)]

            seconds = 1.0 + 0.25 * (i % 3)

            audio = path / f"{split}_{i}.wav"

            soundfile.write(audio, (0.1 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32), 16_000)

            record = {
                "audio_filepath": audio.name,
                "duration": seconds,
                "text": text,
                "translation": translation,
                "tgt_lang": "de",
                "question": question,
                "answers": answers,
            }

            lines.append(json.dumps(record) + "\n")

        (path / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")

    return path


def run_cli(cache_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FAIRSEQ2_SPEECHMAPPER_CACHE_DIR": str(cache_dir), "FAIRSEQ2_NO_PROGRESS": "1"}

    env.pop("FAIRSEQ2_SPEECHMAPPER_TRACEBACK", None)

    return subprocess.run(
        [str(VENV_BIN / "fairseq2"), "speechmapper", *args], capture_output=True, text=True, env=env, timeout=600
    )


def dataset_config(corpus_dir: Path) -> dict[str, object]:
    return {
        "name": None,
        "manifest_dir": str(corpus_dir),
        "train_split": "train",
        "valid_split": "dev",
        "max_duration": 4.0,
        "max_batch_seconds": 8.0,
        "max_batch_size": 4,
        "num_parallel_calls": 1,
    }


def write_instruct_config(
    path: Path, corpus_dir: Path, *, num_steps: int, task: str = "asr", sigma: float = 0.0
) -> Path:
    config = {
        "model": {"name": TINY_MAPPER_CARD},
        "task": {"task": task},
        "loss": {"sigma": sigma},
        "dataset": dataset_config(corpus_dir),
        "trainer": {"mixed_precision": {"mode": "off"}},
        "optimizer": {"name": "adamw", "config": {"lr": 0.003}},
        "regime": {
            "num_steps": num_steps,
            "validate_at_start": True,
            "validate_every_n_steps": 4,
            "checkpoint_every_n_steps": 4,
            "publish_metrics_every_n_steps": 2,
            "keep_last_n_checkpoints": 1,
        },
        "common": {"no_sweep_dir": True, "metric_recorders": {"tensorboard": {"enabled": False}}},
    }

    path.write_text(yaml.safe_dump(config), encoding="utf-8")

    return path


def write_eval_config(
    path: Path, corpus_dir: Path, model: str, *, task: str, scoring: dict[str, object] | None = None
) -> Path:
    config = {
        "model": {"name": model},
        "task": {"task": task},
        "dataset": dataset_config(corpus_dir),
        "generation": {"max_new_tokens": 6},
        "scoring": scoring or {},
        "common": {"no_sweep_dir": True},
    }

    path.write_text(yaml.safe_dump(config), encoding="utf-8")

    return path


def metric_lines(output_dir: Path, kind: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (output_dir / "metrics" / f"{kind}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tuned_model(cache_dir: Path, corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Instruction-tunes the tiny mapper on ST with CE+MSE, stopped at step 4,
    then resumed to step 8; returns the card name."""
    tmp_path = tmp_path_factory.mktemp("it")

    output_dir = tmp_path / "tiny_it"

    first = run_cli(
        cache_dir,
        "instruct",
        str(output_dir),
        "--no-rich",
        "--config-file",
        str(write_instruct_config(tmp_path / "a.yaml", corpus_dir, num_steps=4, task="st", sigma=0.5)),
    )

    assert first.returncode == 0, first.stderr[-3000:]

    resumed = run_cli(
        cache_dir,
        "instruct",
        str(output_dir),
        "--no-rich",
        "--config-file",
        str(write_instruct_config(tmp_path / "b.yaml", corpus_dir, num_steps=8, task="st", sigma=0.5)),
    )

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring training from the last checkpoint" in resumed.stderr + resumed.stdout

    train = metric_lines(output_dir, "train")

    assert [line["Step"] for line in train] == [2, 4, 6, 8]
    assert all(line["ASR Batches"] == 0 for line in train)
    assert all("Stage-1 Loss" in line and "NLL Loss" in line for line in train)

    card = yaml.safe_load((cache_dir / "cards" / "speechmapper_tiny_it.yaml").read_text())

    assert card["checkpoint"] == str(output_dir / "checkpoints" / "step_8" / "model")
    assert (card["stage"], card["task"], card["llm"], card["base"]) == (
        "instruct",
        "st",
        TINY_LLAMA_CARD,
        TINY_MAPPER_CARD,
    )
    assert card["instruction"] == "Translate the audio into {language}."

    return "speechmapper_tiny_it"


def test_instruct_trains_resumes_and_its_loss_falls(
    tuned_model: str, cache_dir: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    output_dir = tmp_path / "asr_it"

    result = run_cli(
        cache_dir,
        "instruct",
        str(output_dir),
        "--no-rich",
        "--config-file",
        str(write_instruct_config(tmp_path / "c.yaml", corpus_dir, num_steps=8)),
    )

    assert result.returncode == 0, result.stderr[-3000:]

    valid = metric_lines(output_dir, "valid")

    # Validation at steps 0, 4 and 8 on the same utterances, same prompt.
    assert [line["Step"] for line in valid] == [0, 4, 8]
    assert valid[-1]["NLL Loss"] < valid[0]["NLL Loss"]


def test_evaluate_asr_writes_hypotheses_and_wer(
    tuned_model: str, cache_dir: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    config = write_eval_config(tmp_path / "e.yaml", corpus_dir, tuned_model, task="asr")

    result = run_cli(cache_dir, "evaluate", str(tmp_path / "eval"), "--no-rich", "--config-file", str(config))

    assert result.returncode == 0, result.stderr[-3000:]

    hypotheses = [
        json.loads(line) for line in (tmp_path / "eval" / "hypotheses" / "dev.rank_0.jsonl").read_text().splitlines()
    ]

    assert sorted(h["id"] for h in hypotheses) == [f"dev_{i}" for i in range(4)]
    assert all(h["instruction"] == "Transcribe the audio." and h["references"] == [h["transcript"]] for h in hypotheses)

    [report] = json.loads((tmp_path / "eval" / "scores.json").read_text())["scores"]

    assert report["system"] == tuned_model and report["task"] == "asr"
    # The corpus WER of what was written, on the project's normaliser.
    expected_wer = jiwer.wer(
        [normalize_for_wer(h["transcript"]) for h in hypotheses],
        [normalize_for_wer(h["hypothesis"]) for h in hypotheses],
    )

    assert report["metrics"]["wer"] == pytest.approx(100.0 * expected_wer)
    assert report["info"]["num_utterances"] == 4
    assert "| WER |" in result.stderr + result.stdout


def test_evaluate_st_scores_bleu_chrf_comet_and_adherence(
    tuned_model: str, cache_dir: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    comet_checkpoint = write_tiny_comet_checkpoint(tmp_path / "comet")

    config = write_eval_config(
        tmp_path / "e.yaml", corpus_dir, tuned_model, task="st", scoring={"comet_model": str(comet_checkpoint)}
    )

    result = run_cli(cache_dir, "evaluate", str(tmp_path / "eval"), "--no-rich", "--config-file", str(config))

    assert result.returncode == 0, result.stderr[-3000:]

    [report] = json.loads((tmp_path / "eval" / "scores.json").read_text())["scores"]

    assert report["test_set"] == f"{corpus_dir / 'dev.jsonl'}:de"
    assert set(report["metrics"]) == {"bleu", "chrf", "comet", "adherence"}
    assert "tok:13a" in report["info"]["bleu_signature"]


def test_evaluate_sqa_scores_exact_match_f1_and_judge(
    tuned_model: str, cache_dir: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    config = write_eval_config(
        tmp_path / "e.yaml", corpus_dir, tuned_model, task="sqa", scoring={"judge_llm": TINY_QWEN_CARD}
    )

    result = run_cli(cache_dir, "evaluate", str(tmp_path / "eval"), "--no-rich", "--config-file", str(config))

    assert result.returncode == 0, result.stderr[-3000:]

    [report] = json.loads((tmp_path / "eval" / "scores.json").read_text())["scores"]

    assert set(report["metrics"]) == {"exact_match", "f1", "judge_accuracy"}
    assert report["info"]["num_questions"] == 4


def test_evaluate_without_the_comet_model_is_one_line(
    tuned_model: str, cache_dir: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    config = write_eval_config(
        tmp_path / "e.yaml", corpus_dir, tuned_model, task="st", scoring={"comet_model": str(tmp_path / "no_comet")}
    )

    result = run_cli(cache_dir, "evaluate", str(tmp_path / "eval"), "--no-rich", "--config-file", str(config))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no_comet" in result.stderr.strip().splitlines()[-1]


def test_generate_replies_to_each_audio_file(tuned_model: str, cache_dir: Path, corpus_dir: Path) -> None:
    files = [str(corpus_dir / "dev_0.wav"), str(corpus_dir / "dev_1.wav")]

    result = run_cli(
        cache_dir,
        "generate",
        "--model",
        tuned_model,
        *files,
        "--prompt",
        "Transcribe the audio.",
        "--max-new-tokens",
        "5",
        "--jsonl",
    )

    assert result.returncode == 0, result.stderr[-3000:]

    replies = [json.loads(line) for line in result.stdout.splitlines()]

    assert [r["file"] for r in replies] == files
    assert all(r["instruction"] == "Transcribe the audio." and r["stop_reason"] in ("stop", "length") for r in replies)

    # Tuned on translation: its instructions need a target language.
    no_prompt = run_cli(cache_dir, "generate", "--model", tuned_model, files[0])

    assert no_prompt.returncode == 2
    assert no_prompt.stderr.strip().endswith("give the instruction with --prompt.")

    not_audio = run_cli(
        cache_dir, "generate", "--model", tuned_model, "--prompt", "Transcribe.", str(corpus_dir / "dev.jsonl")
    )

    assert not_audio.returncode == 2
    assert not_audio.stderr.strip().endswith("Format not recognised.).")


def test_mapper_attached_to_another_llm_is_one_line(cache_dir: Path, corpus_dir: Path, tmp_path: Path) -> None:
    config = write_instruct_config(tmp_path / "c.yaml", corpus_dir, num_steps=2)

    result = run_cli(
        cache_dir,
        "instruct",
        str(tmp_path / "wrong"),
        "--no-rich",
        "--config-file",
        str(config),
        "--config",
        f"speech_llm.llm={TINY_QWEN_CARD}",
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"pretrained against the embeddings of `{TINY_LLAMA_CARD}`" in result.stderr.strip().splitlines()[-1]


# (command, preset) -> settings of the paper (or the demo) the preset must hold.
PRESET_SETTINGS = {
    # The README's first command: minutes on a CPU, on the large corpus.
    ("pretrain", "demo"): {
        ("regime", "num_steps"): 1000,
        ("dataset", "name"): "speechmapper_large_corpus",
        ("llm", "pad_token"): "<empty_output>",
        # What benchmarks/learning.py measured best (README, "Does it learn?").
        ("model", "arch"): "small_cif_ctc",
        ("loss", "ctc_weight"): 20.0,
    },
    ("instruct", "paper_asr"): {
        ("task", "task"): "asr",
        ("loss", "sigma"): 0.0,
        ("regime", "num_steps"): 1000,
        ("optimizer", "config", "lr"): 1e-4,
        ("lr_scheduler", "name"): "passthrough",
    },
    ("instruct", "paper_asr_mse"): {
        ("loss", "sigma"): 0.9,
        ("loss", "stage1", "gamma"): 0.0,
        ("dataset", "max_batch_size"): 12,
        ("trainer", "grad_accumulation", "num_batches"): 8,
    },
    ("instruct", "paper_st"): {("task", "task"): "st", ("dataset", "name"): "europarl_st_en_de"},
    ("instruct", "paper_sqa"): {
        ("task", "task"): "sqa",
        ("task", "asr_mix_prob"): 0.5,
        ("dataset", "name"): "spoken_squad_manifest",
        ("dataset", "max_duration"): 300.0,
    },
    ("instruct", "demo"): {
        ("model", "name"): "speechmapper_demo",
        ("speech_llm", "llm"): None,
        ("regime", "num_steps"): 600,
    },
    ("evaluate", "paper_st"): {
        ("generation", "strategy"): "greedy",
        ("generation", "max_new_tokens"): 150,
        ("scoring", "comet_model"): "Unbabel/wmt22-comet-da",
    },
    ("evaluate", "paper_sqa"): {("scoring", "judge_llm"): "llama3_1_8b_instruct", ("dataset", "max_duration"): 300.0},
    ("evaluate", "demo"): {("model", "name"): "speechmapper_demo_it", ("dataset", "valid_split"): "test"},
}


@pytest.mark.parametrize(("command", "preset"), list(PRESET_SETTINGS))
def test_presets_hold_their_settings(cache_dir: Path, command: str, preset: str) -> None:
    result = run_cli(cache_dir, command, "--preset", preset, "--dump-config")

    assert result.returncode == 0, result.stderr[-2000:]

    config = yaml.safe_load(result.stdout)

    for path, expected in PRESET_SETTINGS[(command, preset)].items():
        value = config
        for key in path:
            value = value[key]

        assert value == expected, path


def test_instruct_with_lora_saves_adapters_that_evaluate_attaches(
    cache_dir: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    output_dir = tmp_path / "lora_it"

    config = write_instruct_config(tmp_path / "c.yaml", corpus_dir, num_steps=4)

    result = run_cli(
        cache_dir,
        "instruct",
        str(output_dir),
        "--no-rich",
        "--config-file",
        str(config),
        "--config",
        "lora.enabled=true",
        "lora.rank=4",
    )

    assert result.returncode == 0, result.stderr[-3000:]

    # Resumed: the adapters are added again before the checkpoint is restored.
    config = write_instruct_config(tmp_path / "d.yaml", corpus_dir, num_steps=8)

    resumed = run_cli(
        cache_dir,
        "instruct",
        str(output_dir),
        "--no-rich",
        "--config-file",
        str(config),
        "--config",
        "lora.enabled=true",
        "lora.rank=4",
    )

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [line["Step"] for line in metric_lines(output_dir, "train")] == [2, 4, 6, 8]

    card = yaml.safe_load((cache_dir / "cards" / "speechmapper_lora_it.yaml").read_text())

    lora = card["model_config"]["llm_lora"]

    assert (lora["rank"], lora["num_layers"], lora["model_dim"]) == (4, 2, 64)

    # The tuned mapper's card builds it with its adapters (strict loading), and
    # evaluation attaches them to the LLM.
    eval_config = write_eval_config(tmp_path / "e.yaml", corpus_dir, "speechmapper_lora_it", task="asr")

    evaluated = run_cli(cache_dir, "evaluate", str(tmp_path / "eval"), "--no-rich", "--config-file", str(eval_config))

    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "LoRA adapters (rank 4) are attached" in evaluated.stderr + evaluated.stdout


def test_evaluate_on_two_ranks_scores_every_utterance_once(
    tuned_model: str, cache_dir: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    config = write_eval_config(tmp_path / "e.yaml", corpus_dir, tuned_model, task="asr")

    env = {**os.environ, "FAIRSEQ2_SPEECHMAPPER_CACHE_DIR": str(cache_dir), "FAIRSEQ2_NO_PROGRESS": "1"}

    command = [
        str(VENV_BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", "29519",
        "-m", "fairseq2_speechmapper", "speechmapper", "evaluate", str(tmp_path / "eval"), "--no-rich", "--config-file", str(config),
    ]  # fmt: skip

    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)

    assert result.returncode == 0, result.stderr[-3000:]

    ids_of_rank = [
        [
            json.loads(line)["id"]
            for line in (tmp_path / "eval" / "hypotheses" / f"dev.rank_{rank}.jsonl").read_text().splitlines()
        ]
        for rank in (0, 1)
    ]

    # Each rank generated its own shard; rank 0 scored the union.
    assert ids_of_rank[0] and ids_of_rank[1]
    assert sorted(ids_of_rank[0] + ids_of_rank[1]) == [f"dev_{i}" for i in range(4)]

    [report] = json.loads((tmp_path / "eval" / "scores.json").read_text())["scores"]

    assert report["info"]["num_utterances"] == 4
