"""The README's demo chain on the real small models, shortened: `pretrain`,
then `instruct` given the pretraining run's directory, then `evaluate` given
the instruction-tuning run's directory; the instruct loss falls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq2_speechmapper.asset_store.paths import CACHE_DIR_ENV
from fairseq2_speechmapper.demo import DemoAssets

VENV_BIN = Path(sys.executable).parent

# Stage 2 validates and evaluates on the small corpus' 38 dev utterances instead
# of the large corpus' 260: the chain's wiring is the same, in a fraction of the
# time (benchmarks/learning.py runs the presets' own splits).
SMALL_CORPUS = ("dataset.name=speechmapper_demo_corpus", "dataset.valid_split=dev")


@pytest.mark.slow
def test_pretrain_instruct_evaluate_demo_chain(demo_assets: DemoAssets, tmp_path: Path) -> None:
    env = {
        **os.environ,
        CACHE_DIR_ENV: str(demo_assets.root_dir.parent),
        "FAIRSEQ2_NO_PROGRESS": "1",
        **demo_assets.hf_env,
    }

    env.pop("FAIRSEQ2_SPEECHMAPPER_TRACEBACK", None)

    def run(*args: str) -> None:
        result = subprocess.run(
            [str(VENV_BIN / "fairseq2"), "speechmapper", *args, "--no-rich"],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )

        assert result.returncode == 0, result.stderr[-3000:]

    pretrain_dir, instruct_dir, eval_dir = tmp_path / "demo", tmp_path / "demo_it", tmp_path / "demo_eval"

    run(
        "pretrain",
        str(pretrain_dir),
        "--config",
        "regime.num_steps=20",
        "regime.validate_at_start=false",
        "regime.validate_every_n_steps=20",
        "regime.checkpoint_every_n_steps=20",
        "lr_scheduler.config.num_warmup_steps=5",
    )

    run(
        "instruct",
        str(instruct_dir),
        "--mapper",
        str(pretrain_dir),
        "--config",
        "regime.num_steps=10",
        "regime.validate_every_n_steps=10",
        "regime.checkpoint_every_n_steps=10",
        *SMALL_CORPUS,
    )

    valid = [json.loads(line) for line in (instruct_dir / "metrics" / "valid.jsonl").read_text().splitlines()]

    assert [line["Step"] for line in valid] == [0, 10]
    assert valid[1]["NLL Loss"] < valid[0]["NLL Loss"]

    run(
        "evaluate",
        str(eval_dir),
        "--model",
        str(instruct_dir),
        "--config",
        "generation.max_new_tokens=8",
        *SMALL_CORPUS,
    )

    [report] = json.loads((eval_dir / "scores.json").read_text())["scores"]

    assert report["system"] == "speechmapper_demo_it"
    assert report["info"]["num_utterances"] == len(demo_assets.dev_manifest.read_text().splitlines())
