"""``benchmarks/learning.py``: its shuffled-reference control, and its
miniature run end to end on the real small models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq2_speechmapper.asset_store.paths import CACHE_DIR_ENV
from fairseq2_speechmapper.demo import DemoAssets

from benchmarks.learning import chain_wers

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
