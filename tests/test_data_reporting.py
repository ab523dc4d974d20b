"""What a run read, said plainly: utterances left out by the duration limits
are counted at start-up, recorded in ``metrics/data.jsonl`` and, above
``dataset.max_left_out_share``, warned about in one line; the evaluation's
scores, hypotheses and table name the manifest actually read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from fairseq2.recipe import run
from fairseq2.utils.validation import StandardObjectValidator, ValidationError

from fairseq2_speechmapper.cli.tiny_assets import TINY_MAPPER_CARD
from fairseq2_speechmapper.datasets import SpeechManifestDataset, SpeechReadOptions
from fairseq2_speechmapper.recipe_support.config import SpeechDatasetSection
from fairseq2_speechmapper.recipe_support.data import describe_split
from fairseq2_speechmapper.recipes.evaluate.config import SpeechEvalConfig
from fairseq2_speechmapper.recipes.evaluate.recipe import SpeechEvalRecipe
from fairseq2_speechmapper.speech_llm import SpeechTaskSection


def _write_manifest(path: Path, seconds: list[float]) -> Path:
    rng = np.random.default_rng(0)

    lines = []

    for i, duration in enumerate(seconds):
        audio = path.parent / f"{path.stem}_{i}.wav"

        soundfile.write(audio, (0.1 * rng.standard_normal(int(duration * 16_000))).astype(np.float32), 16_000)

        lines.append(json.dumps({"audio_filepath": audio.name, "duration": duration, "text": f"word {i}"}) + "\n")

    path.write_text("".join(lines), encoding="utf-8")

    return path


def test_evaluation_over_manifests_replacing_the_card_names_them_and_reports_left_out_data(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # One of three utterances is longer than `max_duration`.
    manifest = _write_manifest(tmp_path / "my_test.jsonl", [1.0, 1.25, 5.0])

    config = SpeechEvalConfig()

    config.model.name = TINY_MAPPER_CARD
    config.task = SpeechTaskSection(task="asr")
    # A card is named, but the manifests given win over its own.
    config.dataset = SpeechDatasetSection(
        name="librispeech_960h_manifest",
        manifests={"test": manifest},
        valid_split="test",
        max_duration=4.0,
        max_batch_seconds=8.0,
        num_parallel_calls=1,
    )
    config.generation.max_new_tokens = 2
    config.common.metric_recorders.tensorboard.enabled = False

    capfd.readouterr()

    run(SpeechEvalRecipe(), config, tmp_path / "eval", no_rich=True)

    log = capfd.readouterr().err

    [report] = json.loads((tmp_path / "eval" / "scores.json").read_text())["scores"]

    assert report["test_set"] == str(manifest)
    assert report["info"]["manifest"] == str(manifest)

    hypotheses = [json.loads(line) for line in (tmp_path / "eval" / "hypotheses" / "test.rank_0.jsonl").open()]

    assert len(hypotheses) == 2 and {h["test_set"] for h in hypotheses} == {str(manifest)}

    # The logged table's column, and the card's name nowhere but in the logged configuration.
    assert f"| system | metric | {manifest} |" in log
    assert "librispeech_960h_manifest" not in log.split("Scores written to")[1]
    assert f"Evaluating on {manifest} (manifest {manifest})." in log

    # Left out: counted at start-up, warned about in one line, recorded.
    assert "1 outside 0.1-4.0 s left out (33.3%)" in log

    warnings = [line for line in log.splitlines() if "leave out" in line]

    assert len(warnings) == 1
    assert "WARNING" in warnings[0] and "leave out 1 of 3 utterances (33.3%" in warnings[0]
    assert "`dataset.max_left_out_share` (5.0%)" in warnings[0]

    [data] = [json.loads(line) for line in (tmp_path / "eval" / "metrics" / "data.jsonl").open()]

    assert data["split"] == "test"
    assert (data["num_utterances"], data["num_left_out_by_duration"]) == (3, 1)
    assert data["share_left_out_by_duration"] == pytest.approx(1 / 3)


def test_a_card_split_is_named_by_card_and_split(tmp_path: Path) -> None:
    manifest = tmp_path / "dev.jsonl"

    dataset = SpeechManifestDataset({"dev": manifest})

    assert describe_split(dataset, SpeechDatasetSection(name="my_corpus"), "dev") == ("my_corpus:dev", str(manifest))

    overridden = SpeechDatasetSection(name="my_corpus", manifest_dir=tmp_path)

    assert describe_split(dataset, overridden, "dev") == (str(manifest), str(manifest))


def test_max_left_out_share_is_validated() -> None:
    with pytest.raises(ValidationError, match="`max_left_out_share` must be between 0 and 1, but is 1.5"):
        StandardObjectValidator().validate(SpeechReadOptions(max_left_out_share=1.5))
