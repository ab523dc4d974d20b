"""Exact resume: a run SIGKILLed after a checkpoint and resumed with the same
command ends with bitwise the same weights, the same batches and the same
learning rates as the run never stopped: ``pretrain`` reading audio and reading
the feature cache, and ``instruct``, on one process (here) and on two
(test_multi_rank.py).

Dropout is on (the mapper's in ``pretrain``, LoRA's in ``instruct``), and
``instruct`` mixes ASR batches in at random, so the RNG state is part of what
resumes. On the tiny random-weight models, 6 steps, a checkpoint every 2; the
uninterrupted and the resumed runs in this process, the killed one in its own."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq2_speechmapper.cli import main

from helpers.runs import (
    KILL_AT_STEP,
    KILLER,
    assert_same_run,
    dataset_config,
    extract_features,
    killer_env,
    write_config,
    write_corpus,
)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("resume_corpus"))


def _run_in_process(capfd: pytest.CaptureFixture[str], recipe: str, output_dir: Path, config_file: Path) -> str:
    capfd.readouterr()

    with pytest.raises(SystemExit) as exit_info:
        main(["speechmapper", recipe, str(output_dir), "--config-file", str(config_file), "--no-rich"])

    output = "".join(capfd.readouterr())

    assert exit_info.value.code == 0, output[-3000:]

    return output


@pytest.mark.parametrize("recipe, reads", [("pretrain", "audio"), ("pretrain", "cache"), ("instruct", "audio")])
def test_a_run_killed_after_a_checkpoint_resumes_bitwise_the_same(
    recipe: str,
    reads: str,
    corpus_dir: Path,
    cache_dir: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    if reads == "cache":
        dataset = dataset_config(None, extract_features(tmp_path / "features", corpus_dir))
    else:
        dataset = dataset_config(corpus_dir)

    config_file = write_config(tmp_path / "config.yaml", recipe, dataset)

    _run_in_process(capfd, recipe, tmp_path / "reference", config_file)

    resumed_dir = tmp_path / "resumed"

    command = [sys.executable, str(KILLER), "speechmapper", recipe, str(resumed_dir), "--config-file", str(config_file)]

    killed = subprocess.run(
        [*command, "--no-rich"],
        capture_output=True,
        text=True,
        env=killer_env(cache_dir, KILL_AT_STEP=str(KILL_AT_STEP)),
        timeout=300,
        check=False,
    )

    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    assert sorted(p.name for p in (resumed_dir / "checkpoints").glob("step_*")) == ["step_4"]

    output = _run_in_process(capfd, recipe, resumed_dir, config_file)

    assert "Restoring training from the last checkpoint at step 4." in output

    assert_same_run(resumed_dir, tmp_path / "reference")
