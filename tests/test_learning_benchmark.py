"""``benchmarks/learning.py``: its shuffled-reference control, its
comparison of runs (the data-scaling curve), and its miniature run end to end
on the real small models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq2_speechmapper.asset_store.paths import CACHE_DIR_ENV
from fairseq2_speechmapper.demo import DemoAssets

from benchmarks.learning import chain_wers, frequent_token_baseline, token_coverage
from benchmarks.learning_report import compare, scaling_points

# The benchmarks run as modules of the `benchmarks` package, from the repository root.
ROOT = Path(__file__).resolve().parent.parent


def test_shuffled_references_separate_following_the_audio_from_ignoring_it() -> None:
    references = ["the cat sat on the mat", "please close the door", "we missed the last bus home", "it is cold"]

    def records(hypotheses: list[str]) -> list[dict[str, object]]:
        return [
            {"id": str(i), "references": [ref], "hypothesis": hyp}
            for i, (ref, hyp) in enumerate(zip(references, hypotheses))
        ]

    wer, shuffled_wer = chain_wers(records(references))

    assert wer == 0.0
    assert shuffled_wer > 80.0

    # The same fluent sentence whatever the audio: no gap.
    wer, shuffled_wer = chain_wers(records(["please close the door"] * 4))

    assert wer == pytest.approx(shuffled_wer)


def test_text_only_baselines_and_token_coverage_count_every_test_token() -> None:
    train = [[1, 2, 3], [1, 2, 4], [1, 5], [6, 2], [2]]
    test = [[1, 2, 7], [6, 2, 3, 8]]

    # Token 2 is the most frequent; 1, 2, 3 lead each position most often.
    assert frequent_token_baseline(train, test) == {
        "most_frequent_token": pytest.approx(100 * 2 / 7),
        "most_frequent_token_per_position": pytest.approx(100 * 4 / 7),
    }

    # 7 and 8 never occur in training; 3 once; 1 three times, 2 four times.
    coverage = token_coverage(train, test)

    assert coverage["seen_1"] == pytest.approx(100 * 5 / 7)
    assert coverage["seen_5"] == 0.0


def _write_run(
    work_dir: Path, *, train_split: str, hours: float | None, config: list[str], accuracies: dict[int, float]
) -> Path:
    rows = [
        {"row": "stage1_only", "stage1_steps": steps, "it_steps": 0, "cpu_minutes": steps / 100, "word_token_accuracy": accuracy,
         "stage1_ter": 100 - accuracy, "output_target_norm": 1.0, "it_accuracy": None, "wer": None, "shuffled_wer": None, "examples": []}
        for steps, accuracy in accuracies.items()
    ]  # fmt: skip

    summary: dict[str, object] = {
        "setup": {"train_split": train_split, "stage1_config": config},
        "baseline": 8.9,
        "rows": rows,
    }

    if hours is not None:
        summary["train_hours"] = hours

    work_dir.mkdir()

    (work_dir / "learning.json").write_text(json.dumps(summary), encoding="utf-8")

    return work_dir


def test_compare_plots_accuracy_against_hours_for_one_configuration_at_equal_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cif = ["model.arch=small_cif_ctc"]

    runs = [
        _write_run(tmp_path / "h20", train_split="train", hours=20.1, config=cif, accuracies={1000: 21.0, 2000: 30.0}),
        _write_run(tmp_path / "h2", train_split="train_2h", hours=2.0, config=cif, accuracies={1000: 20.0, 2000: 22.0}),
        # Another configuration: its own curve, never mixed into the first.
        _write_run(tmp_path / "paper", train_split="train", hours=20.1, config=[], accuracies={1000: 11.0}),
        # From before `train_hours` was recorded: in the table, not on the curve.
        _write_run(tmp_path / "old", train_split="train_8h", hours=None, config=cif, accuracies={1000: 99.0}),
    ]

    assert compare(runs, tmp_path / "out") == 0

    table = (tmp_path / "out" / "compare.md").read_text(encoding="utf-8").splitlines()

    assert len(table) == 2 + 6
    assert "| h2 | train_2h | 2.0 | model.arch=small_cif_ctc | 2000 |" in "\n".join(table)
    assert "| old | train_8h | – |" in "\n".join(table)
    assert (tmp_path / "out" / "compare.png").stat().st_size > 0

    summaries = [(run, json.loads((run / "learning.json").read_text(encoding="utf-8"))) for run in runs]

    assert scaling_points(summaries) == {
        ("model.arch=small_cif_ctc", 1000): [(2.0, 20.0), (20.1, 21.0)],
        ("model.arch=small_cif_ctc", 2000): [(2.0, 22.0), (20.1, 30.0)],
    }


@pytest.mark.slow
def test_quick_learning_benchmark_runs_the_chain_and_writes_its_report(demo_assets: DemoAssets, tmp_path: Path) -> None:
    env = {**os.environ, CACHE_DIR_ENV: str(demo_assets.root_dir.parent), "FAIRSEQ2_NO_PROGRESS": "1"}

    output_dir = tmp_path / "learning"

    result = subprocess.run(
        # Untrained and IT-only rows run the same commands as these, from another card.
        [
            sys.executable,
            "-m",
            "benchmarks.learning",
            "--quick",
            "--output-dir",
            str(output_dir),
            "--rows",
            "stage1_only",
            "stage1_it",
            "slam",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )

    assert result.returncode == 0, result.stderr[-3000:]

    summary = json.loads((output_dir / "learning.json").read_text())

    rows = {row["row"]: row for row in summary["rows"]}

    assert [row["row"] for row in summary["rows"]] == ["stage1_only", "stage1_it", "slam"]

    assert [rows[name]["stage1_steps"] for name in ("stage1_only", "stage1_it", "slam")] == [20, 20, 0]
    assert [rows[name]["it_steps"] for name in ("stage1_only", "stage1_it")] == [0, 5]

    for name in ("stage1_only", "stage1_it"):
        assert 0.0 <= rows[name]["word_token_accuracy"] <= 100.0
        assert rows[name]["cpu_minutes"] > 0.0

    # The SLAM connector gets the CPU minutes of stage 1 + IT, in steps of 10 (the
    # presets' checkpoint interval): about the CPU of row (e), more steps than its IT.
    assert rows["slam"]["it_steps"] % 10 == 0 and rows["slam"]["it_steps"] > rows["stage1_it"]["it_steps"]
    assert 0.33 < rows["slam"]["cpu_minutes"] / rows["stage1_it"]["cpu_minutes"] < 3.0

    # The one stage-1 budget is the largest: the chain is evaluated on every row.
    for row in summary["rows"]:
        assert row["wer"] > 0.0 and row["shuffled_wer"] > 0.0
        assert len(row["examples"]) == 5

    assert 0.0 < summary["baseline"] < 100.0

    assert (output_dir / "learning.png").stat().st_size > 10_000
    assert "| (e) stage 1 + IT |" in result.stdout
