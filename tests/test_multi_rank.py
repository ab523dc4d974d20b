"""Two ranks under ``torchrun`` (CPU, gloo): a rank SIGKILLed in the middle of
a step stops every rank, and the same command resumes, bitwise, the run never
stopped (exact resume on two processes); a NaN loss or a bad utterance on one
rank stops every rank at the same step, each with one line naming it, after the
checkpoint still in flight is completed on every rank.

On the tiny random-weight models, 6 steps or fewer; each run has a time limit,
so a rank that hangs fails the test instead of blocking it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from helpers.runs import (
    MODEL_FILE,
    assert_same_run,
    checkpoint_steps,
    dataset_config,
    error_lines,
    extract_features,
    killer_env,
    torchrun,
    write_config,
    write_corpus,
)

# Generous: two ranks on two shared cores take about 25 s a run.
TIMEOUT_S = 240


def _run(cache_dir: Path, command: list[str], **fault: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, env=killer_env(cache_dir, **fault), timeout=TIMEOUT_S, check=False
    )


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Each rank reads half: 8 utterances, 2 a batch, so each rank's epoch is 2 steps.
    return write_corpus(tmp_path_factory.mktemp("ranks_corpus"), num_utterances=8)


@pytest.fixture(scope="module")
def config_file(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("ranks_config") / "config.yaml", "pretrain", dataset_config(corpus_dir))


@pytest.mark.parametrize(
    "recipe, reads",
    [("pretrain", "audio"), pytest.param("pretrain", "cache", marks=pytest.mark.slow), ("instruct", "audio")],
)
def test_a_rank_killed_mid_step_stops_every_rank_and_the_same_command_resumes_bitwise(
    recipe: str, reads: str, corpus_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    if reads == "cache":
        dataset = dataset_config(None, extract_features(tmp_path / "features", corpus_dir))
    else:
        dataset = dataset_config(corpus_dir)

    config_file = write_config(tmp_path / "config.yaml", recipe, dataset)

    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"

    reference = _run(cache_dir, torchrun(recipe, reference_dir, config_file))

    assert reference.returncode == 0, reference.stderr[-3000:]

    # Rank 1 dies after its backward pass of step 5; rank 0 is in the
    # gradients' all-reduce or past it.
    killed = _run(
        cache_dir,
        torchrun(recipe, resumed_dir, config_file),
        KILL_AT_STEP="5",
        KILL_RANK="1",
        KILL_WHEN="backward",
    )

    assert killed.returncode != 0

    # Step 6 never came; step 4's checkpoint may still be in its temporary directory.
    complete = [s for s in checkpoint_steps(resumed_dir) if not s.endswith(".tmp")]

    assert complete in (["step_2"], ["step_4"]), checkpoint_steps(resumed_dir)

    resumed = _run(cache_dir, torchrun(recipe, resumed_dir, config_file))

    assert resumed.returncode == 0, resumed.stderr[-3000:]

    log = (resumed_dir / "logs" / "rank_1.log").read_text(encoding="utf-8")

    assert f"Restoring training from the last checkpoint at step {complete[0][5:]}." in log

    assert_same_run(resumed_dir, reference_dir)


def test_a_nan_loss_on_one_rank_stops_every_rank_at_its_step_with_the_checkpoint_in_flight_saved(
    config_file: Path, cache_dir: Path, tmp_path: Path
) -> None:
    output_dir = tmp_path / "nan"

    # Step 2's checkpoint is still being written when the flags are read at step 4.
    result = _run(
        cache_dir,
        torchrun(
            "pretrain",
            output_dir,
            config_file,
            "--config",
            "optimizer.config.impl=fused",
            "regime.publish_metrics_every_n_steps=2",
        ),
        NAN_AT_STEP="3",
        NAN_RANK="1",
        SLOW_SAVE_AT_STEP="2",
    )

    assert result.returncode != 0

    fix = "the step was not taken and the run stopped at step 4, and no checkpoint holds it."

    [rank_0_error] = error_lines(output_dir, 0)
    [rank_1_error] = error_lines(output_dir, 1)

    assert f"Step 3: the loss is not finite on another rank's batch; {fix}" in rank_0_error
    assert "Step 3: the loss is nan on the batch of " in rank_1_error and fix in rank_1_error

    for rank in (0, 1):
        log = (output_dir / "logs" / f"rank_{rank}.log").read_text(encoding="utf-8")

        assert "The checkpoint in flight is saved before the run stops." in log

    assert checkpoint_steps(output_dir) == ["step_2"]

    state = torch.load(output_dir / "checkpoints" / "step_2" / MODEL_FILE, weights_only=True)

    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_a_bad_utterance_on_one_rank_stops_every_rank_at_the_same_step(
    corpus_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    bad_corpus = tmp_path / "corpus"

    shutil.copytree(corpus_dir, bad_corpus)

    (bad_corpus / "train_5.wav").write_bytes(b"")

    config_file = write_config(tmp_path / "config.yaml", "pretrain", dataset_config(bad_corpus))

    output_dir = tmp_path / "bad"

    result = _run(cache_dir, torchrun("pretrain", output_dir, config_file, "--config", "dataset.log_shard=true"))

    assert result.returncode != 0

    [rank_0_error] = error_lines(output_dir, 0)
    [rank_1_error] = error_lines(output_dir, 1)

    # Both name the utterance, on the step where one rank read it.
    assert "train_5.wav" in rank_0_error
    assert rank_0_error.split(" ERROR ", 1)[1] == rank_1_error.split(" ERROR ", 1)[1]

    complete = [s for s in checkpoint_steps(output_dir) if not s.endswith(".tmp")]

    assert complete == checkpoint_steps(output_dir)
