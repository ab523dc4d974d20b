"""Smoke test of ``benchmarks/pretrain.py``: its padding part alone (a few
seconds; the step-time and memory parts load models and take longer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pretrain.py"


def test_pretrain_benchmark_padding_bucketing_pads_less(tmp_path: Path) -> None:
    json_file = tmp_path / "results.json"

    # The subprocess inherits the test cache directory, so the demo corpus is
    # not found there and only the synthetic durations are measured.
    result = subprocess.run(
        [sys.executable, str(_SCRIPT), "--quick", "--only", "padding", "--json", str(json_file)],
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
