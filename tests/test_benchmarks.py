"""Smoke tests of the benchmarks: ``benchmarks/pretrain.py``'s padding part
alone (a few seconds; the step-time and memory parts load models and take
longer), ``benchmarks/feature_cache.py --quick`` (under a minute, 2 intra-op
threads), ``benchmarks/instruct.py --quick`` (~15 s) and ``benchmarks/gpu.py
--quick`` (~15 s, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The benchmarks run as modules of the `benchmarks` package, from the repository root.
_ROOT = Path(__file__).resolve().parents[1]


def test_pretrain_benchmark_padding_bucketing_pads_less(tmp_path: Path) -> None:
    json_file = tmp_path / "results.json"

    # The subprocess inherits the test cache directory, so the demo corpus is
    # not found there and only the synthetic durations are measured.
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.pretrain", "--quick", "--only", "padding", "--json", str(json_file)],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr

    rows = json.loads(json_file.read_text(encoding="utf-8"))

    synthetic = [r for r in rows if r["section"] == "padding" and r["case"].startswith("LibriSpeech-like")]

    assert len(synthetic) == 1

    bucketed, unbucketed = synthetic[0]["value"], synthetic[0]["baseline"]

    assert 0.0 <= bucketed < unbucketed < 1.0

    assert "LibriSpeech-like" in result.stdout


def test_generation_benchmark_quick_runs_and_both_sides_agree(tmp_path: Path) -> None:
    json_file = tmp_path / "generation.json"

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.generation", "--quick", "--json", str(json_file)],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr

    summary = json.loads(json_file.read_text(encoding="utf-8"))

    assert summary["card"] == "speechmapper_tiny_llama_instruct"

    assert [r["side"] for r in summary["results"]] == ["KV cache", "no cache"]

    assert all(r["tokens_per_second"] > 0 and r["num_tokens"] == 4 * 16 for r in summary["results"])

    # Greedy with and without the cache: the same tokens (tiny model, fp32).
    assert summary["num_same_sequences"] == 4

    assert "KV-cache speed-up" in result.stdout


@pytest.mark.slow
def test_feature_cache_benchmark_quick_reports_the_three_figures(tmp_path: Path) -> None:
    json_file = tmp_path / "results.json"

    result = subprocess.run(
        # 2 threads: with spinning OpenMP workers the cached steps were the
        # slower ones there (`fairseq2_speechmapper.cli.openmp`).
        [
            sys.executable,
            "-m",
            "benchmarks.feature_cache",
            "--quick",
            "--threads",
            "2",
            "--json",
            str(json_file),
        ],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]

    rows = {row["section"]: row for row in json.loads(json_file.read_text(encoding="utf-8"))}

    assert set(rows) == {"step time", "extraction", "storage"}

    # Both sides ran the same batches; the cached step skips the speech encoder, so it is faster.
    assert (rows["step time"]["value_name"], rows["step time"]["baseline_name"]) == ("on the fly", "cached")
    assert rows["step time"]["ratio"] > 1.0

    assert rows["extraction"]["value"] > 0.0

    # float16 features (plus a small index) against float32 ones.
    assert 0.5 <= rows["storage"]["ratio"] < 0.6


@pytest.mark.slow
def test_instruct_benchmark_quick_recipe_and_its_unit_without_trainer_agree(tmp_path: Path) -> None:
    json_file = tmp_path / "instruct.json"

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.instruct", "--quick", "--json", str(json_file)],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    # The script fails unless all sides trained on batches of the same sizes
    # and had the same loss and gradient norm on the first batch (the cached
    # side too: its features are the speech encoder's).
    assert result.returncode == 0, result.stderr[-3000:]

    rows = json.loads(json_file.read_text(encoding="utf-8"))

    assert [(r["section"], r["value_name"], r["baseline_name"]) for r in rows] == [
        ("step time", "recipe", "unit, no trainer"),
        ("step time", "recipe", "unit+reader"),
        ("step time", "speech encoder on the fly", "feature cache"),
    ]

    assert all(r["case"].startswith("tiny") for r in rows)

    # Per-step times of the same work on both sides (a loose bound: the tiny
    # models' steps take milliseconds on a shared machine).
    assert all(r["value"] > 0.0 and 0.1 < r["ratio"] < 10.0 for r in rows)

    assert "first batch: loss recipe" in result.stderr


def test_gpu_benchmark_quick_measures_the_three_steps_and_the_reader_on_cpu(tmp_path: Path) -> None:
    json_file = tmp_path / "gpu.json"

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--quick", "--device", "cpu", "--json", str(json_file)],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]

    summary = json.loads(json_file.read_text(encoding="utf-8"))

    assert summary["errors"] == {}

    measured, arithmetic = summary["measurements"], summary["arithmetic"]

    assert [m["what"].split(",")[0] for m in measured] == ["stage 1 step", "speech encoder extraction", "IT step"]

    assert all(m["step_s"] > 0 and m["tflop_per_step"] > 0 and m["audio_s_per_s"] > 0 for m in measured)

    # The paper's shapes, counted on the meta device: the mapper's step costs
    # ~12 GFLOP per audio second (issue estimate: ~14), the frozen 8B LLM's
    # IT step far more.
    stage1, speech_encoder, it = arithmetic

    assert 10 < stage1["gflop_per_audio_s"] < 16
    assert 40 < speech_encoder["gflop_per_audio_s"] < 90
    assert it["gflop_per_audio_s"] > stage1["gflop_per_audio_s"]

    assert [r["audio_s_per_s"] > 0 for r in summary["readers"]] == [True]

    assert "paper stage 1 (2M steps) (H100 at 40% MFU)" in result.stdout


def test_command_line_makes_idle_openmp_workers_sleep_before_torch_loads() -> None:
    # The cause of cached pretraining steps slower than on-the-fly ones on 2
    # busy cores (`python -m benchmarks.feature_cache --threads 2` measures it).
    code = (
        "import os, sys; import fairseq2_speechmapper.cli; print('torch' in sys.modules, os.environ['OMP_WAIT_POLICY'])"
    )

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True
    )

    assert result.stdout.split() == ["False", "PASSIVE"]
