"""Stage 2 as the paper describes it: the "CE+MSE" preset's loss has no cosine
term, and COMET's source is the transcript as written (case kept)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from fairseq2.utils.validation import StandardObjectValidator, ValidationError

from fairseq2_speechmapper.cli import main
from fairseq2_speechmapper.datasets.bad_samples import collate_speech_batch
from fairseq2_speechmapper.datasets.text import TextNormalizationConfig, TextNormalizer
from fairseq2_speechmapper.recipes.evaluate import scores as scores_module
from fairseq2_speechmapper.recipes.evaluate.config import ScoringSection
from fairseq2_speechmapper.recipes.instruct.criterion import InstructLoss
from fairseq2_speechmapper.scoring import CometScore
from fairseq2_speechmapper.speech_llm.model import ResponseLogits
from fairseq2_speechmapper.stage1 import Stage1LossSection, build_embedding_targets, create_stage1_loss

# The pad (0) and three words on the axes, as in test_stage1_loss.py.
TABLE = torch.tensor([[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


def _dumped_config(capfd: pytest.CaptureFixture[str], command: str, preset: str, tmp_path: Path) -> dict[str, object]:
    with pytest.raises(SystemExit) as exit_info:
        main(["speechmapper", command, str(tmp_path / "out"), "--preset", preset, "--dump-config"])

    assert exit_info.value.code == 0

    config = yaml.safe_load(capfd.readouterr().out)

    assert isinstance(config, dict)

    return config


def test_paper_asr_mse_loss_is_ce_plus_sigma_mse_without_cosine(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    loss_config = _dumped_config(capfd, "instruct", "paper_asr_mse", tmp_path)["loss"]

    assert isinstance(loss_config, dict)

    section = Stage1LossSection(**loss_config["stage1"])

    StandardObjectValidator().validate(section)

    sigma = loss_config["sigma"]

    assert sigma == 0.9 and section.gamma == 0.0 and section.alpha == 5.0

    loss = InstructLoss(sigma=sigma, stage1_loss=create_stage1_loss(section))

    targets = build_embedding_targets([torch.tensor([1])], output_lens=[3], embedding_table=TABLE, pad_idx=0)

    # Position 0: word (1, 0); 1: first pad (0, -1); 2: pad (0, -1).
    outputs = torch.tensor([[[1.0, 1.0], [0.0, -1.0], [2.0, 0.0]]])

    mse_word, mse_pad = (0.5 + 0.0) / 2, 2.5

    # Two response tokens, uniform logits over 4 tokens: CE = 2·ln 4.
    response = ResponseLogits(logits=torch.zeros(2, 4), targets=torch.tensor([1, 2]), response_lens=[2])

    output = loss(response, outputs, targets)

    ce_sum = 2 * torch.log(torch.tensor(4.0)).item()

    expected = (1 - sigma) * ce_sum + sigma * 2 * (5 * mse_word + 5 * mse_pad)

    assert output.loss.item() == pytest.approx(expected)

    # The cosine is still reported, and would have changed the loss: it is not 0.
    assert output.stage1 is not None and output.stage1.cosine.item() > 0.5


def test_gamma_zero_is_accepted_and_a_negative_gamma_refused() -> None:
    validator = StandardObjectValidator()

    validator.validate(Stage1LossSection(gamma=0.0))

    with pytest.raises(ValidationError, match="`gamma` must be 0 or more, but is -1.0"):
        validator.validate(Stage1LossSection(gamma=-1.0))


def test_comet_source_is_the_transcript_with_its_case(monkeypatch: pytest.MonkeyPatch) -> None:
    normalize = TextNormalizer(TextNormalizationConfig())

    example = {
        "inputs": torch.zeros(3, 2),
        "text": "Hello World, Mr. Smith.",
        "id": "u1",
        "source": "m.jsonl:1",
        "fields": json.dumps({"translation": "Hallo Welt, Herr Smith.", "tgt_lang": "de"}),
    }

    batch = collate_speech_batch([example], normalize, lambda text: torch.tensor([1]))

    assert batch is not None
    assert batch.texts == ["hello world, mr. smith."]
    assert batch.raw_texts == ["Hello World, Mr. Smith."]

    seen_sources: list[list[str]] = []

    class RecordingComet:
        def score(
            self, sources: list[str], hypotheses: list[str], references: list[str], *, batch_size: int
        ) -> CometScore:
            seen_sources.append(sources)

            return CometScore(comet=50.0, segment_scores=[50.0] * len(sources), model="stub")

    monkeypatch.setattr(scores_module, "load_comet", lambda model: RecordingComet())

    # The record as the evaluation unit writes it.
    record: dict[str, object] = {
        "transcript": batch.texts[0],
        "source_text": batch.raw_texts[0],
        "references": ["Hallo Welt, Herr Smith."],
        "hypothesis": "Hallo Welt, Herr Smith.",
        "tgt_lang": "de",
    }

    scores_module.score_hypotheses(
        [record],
        system="s",
        test_set="t",
        task="st",
        section=ScoringSection(comet_model="stub", language_adherence=False),
    )

    assert seen_sources == [["Hello World, Mr. Smith."]]
