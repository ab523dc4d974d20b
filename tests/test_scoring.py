from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairseq2_speechmapper.scoring import (
    CometScorer,
    LLMJudge,
    ScoreReport,
    ScoringError,
    format_scores_table,
    identify_languages,
    load_comet,
    parse_verdict,
    score_language_adherence,
    score_squad,
    score_translation,
    score_wer,
    write_scores,
)
from fairseq2_speechmapper.scoring.asr import edit_distance
from fairseq2_speechmapper.scoring.comet_metric import import_comet
from fairseq2_speechmapper.scoring.qa import squad_exact_match, squad_f1

from helpers.scores import read_scores
from helpers.tiny_comet import write_tiny_comet_checkpoint

# ASR -------------------------------------------------------------------------


def test_wer_counts_errors_over_reference_words_after_normalisation() -> None:
    references = ["The cat sat on the mat.", "Hello, world!", "Don't stop."]
    hypotheses = ["the CAT sat on mat", "hello world again", "dont stop"]

    score = score_wer(hypotheses, references)

    # One deletion (the), one insertion (again), one substitution (don't/dont:
    # the word-internal apostrophe stays) over 6 + 2 + 2 reference words.
    assert (score.num_substitutions, score.num_deletions, score.num_insertions) == (1, 1, 1)
    assert score.num_reference_words == 10
    assert score.wer == pytest.approx(30.0)
    assert score.metrics() == {"wer": pytest.approx(30.0)}


def test_wer_counts_an_empty_hypothesis_as_deletions_and_rejects_misaligned_inputs() -> None:
    assert score_wer(["", "a b"], ["x y z", "a b"]).wer == pytest.approx(60.0)

    with pytest.raises(ScoringError, match="2 hypotheses, 1 references"):
        score_wer(["a", "b"], ["a"])


# ST: BLEU and chrF -----------------------------------------------------------

_EN_REFERENCES = ["The cat sat on the mat.", "Hello there, my friend!", "We will meet again tomorrow morning."]
_EN_HYPOTHESES = ["The cat sat on a mat.", "Hello my friend!", "We meet again tomorrow in the morning."]

_ZH_REFERENCES = ["今天天气很好，我们去公园散步吧。", "这是一个测试句子。", "他明天早上会来。"]
_ZH_HYPOTHESES = ["今天天气不错，我们去公园走走。", "这是测试的句子。", "他明天会来。"]


def _sacrebleu_cli(tmp_path: Path, references: list[str], hypotheses: list[str], *args: str) -> list[dict[str, str]]:
    ref_file, hyp_file = tmp_path / "ref.txt", tmp_path / "hyp.txt"

    ref_file.write_text("\n".join(references) + "\n", encoding="utf-8")
    hyp_file.write_text("\n".join(hypotheses) + "\n", encoding="utf-8")

    sacrebleu = Path(sys.executable).parent / "sacrebleu"

    result = subprocess.run(
        [
            str(sacrebleu),
            str(ref_file),
            "-i",
            str(hyp_file),
            "-m",
            "bleu",
            "chrf",
            "-w",
            "6",
            "--format",
            "json",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    )

    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("tgt_lang", "references", "hypotheses", "cli_args", "tokenizer"),
    [
        ("de", _EN_REFERENCES, _EN_HYPOTHESES, [], "13a"),  # a Latin-script target: 13a
        ("en", _EN_REFERENCES, _EN_HYPOTHESES, [], "13a"),
        ("zh-CN", _ZH_REFERENCES, _ZH_HYPOTHESES, ["-tok", "zh"], "zh"),
    ],
)
def test_bleu_and_chrf_equal_the_sacrebleu_command_line(
    tmp_path: Path, tgt_lang: str, references: list[str], hypotheses: list[str], cli_args: list[str], tokenizer: str
) -> None:
    cli_bleu, cli_chrf = _sacrebleu_cli(tmp_path, references, hypotheses, *cli_args)

    score = score_translation(hypotheses, references, tgt_lang=tgt_lang)

    assert score.bleu == pytest.approx(float(cli_bleu["score"]), abs=1e-6)
    assert score.chrf == pytest.approx(float(cli_chrf["score"]), abs=1e-6)

    assert score.bleu_signature == cli_bleu["signature"]
    assert score.chrf_signature == cli_chrf["signature"]

    assert f"tok:{tokenizer}" in score.bleu_signature

    # Neither a perfect nor a zero score: the comparison means something.
    assert 5.0 < score.bleu < 95.0
    assert 5.0 < score.chrf < 95.0


def test_chinese_bleu_with_13a_would_differ() -> None:
    # Why the tokenizer matters: 13a sees each unpunctuated Chinese clause as one word.
    zh = score_translation(_ZH_HYPOTHESES, _ZH_REFERENCES, tgt_lang="zh")
    as_13a = score_translation(_ZH_HYPOTHESES, _ZH_REFERENCES, tgt_lang="zh", bleu_tokenizer="13a")

    assert zh.bleu > as_13a.bleu + 10.0


def test_japanese_bleu_uses_mecab_or_says_how_to_install_it() -> None:
    try:
        import MeCab  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(ScoringError, match=r"pip install 'sacrebleu\[ja\]'.*bleu_tokenizer='char'"):
            score_translation(["猫が座った。"], ["猫が座った。"], tgt_lang="ja")
    else:
        assert "tok:ja-mecab" in score_translation(["猫が座った。"], ["猫が座った。"], tgt_lang="ja").bleu_signature

    # The documented fall-back works without MeCab.
    assert score_translation(
        ["猫が座った。"], ["猫が座った。"], tgt_lang="ja", bleu_tokenizer="char"
    ).bleu == pytest.approx(100.0)


# ST: COMET -------------------------------------------------------------------

_COMET_SOURCES = ["The cat sat on the mat.", "Good morning, everyone.", "Where is the station?"]
_COMET_HYPOTHESES = ["Die Katze saß auf der Matte.", "Guten Morgen, alle.", ""]
_COMET_REFERENCES = ["Die Katze saß auf der Matte.", "Guten Morgen zusammen.", "Wo ist der Bahnhof?"]


@pytest.fixture(scope="module")
def tiny_comet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_comet_checkpoint(tmp_path_factory.mktemp("tiny_comet"))


def test_tiny_comet_checkpoint_loads_with_its_weights(tiny_comet_checkpoint: Path) -> None:
    assert tiny_comet_checkpoint.name == "model.ckpt"
    assert (tiny_comet_checkpoint.parents[1] / "hparams.yaml").is_file()

    model = import_comet().load_from_checkpoint(str(tiny_comet_checkpoint), local_files_only=True)

    saved = torch.load(tiny_comet_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    loaded = model.state_dict()

    # `load_from_checkpoint` is not strict: a key mismatch would leave random weights.
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[key], loaded[key]) for key in saved)

    assert type(model).__name__ == "RegressionMetric"


def test_comet_scores_are_the_models_times_100(tiny_comet_checkpoint: Path) -> None:
    scorer = load_comet(tiny_comet_checkpoint.parents[1], gpus=0)  # the model directory

    assert isinstance(scorer, CometScorer)

    score = scorer.score(_COMET_SOURCES, _COMET_HYPOTHESES, _COMET_REFERENCES, batch_size=2)

    model = import_comet().load_from_checkpoint(str(tiny_comet_checkpoint), local_files_only=True)

    samples = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(_COMET_SOURCES, _COMET_HYPOTHESES, _COMET_REFERENCES)]

    expected = model.predict(samples, batch_size=3, gpus=0, progress_bar=False)

    assert score.segment_scores == pytest.approx([100.0 * s for s in expected.scores], abs=1e-4)
    assert score.comet == pytest.approx(100.0 * expected.system_score, abs=1e-4)

    # The checkpoint file itself loads too, and scores the same.
    again = load_comet(tiny_comet_checkpoint, gpus=0).score(_COMET_SOURCES, _COMET_HYPOTHESES, _COMET_REFERENCES)

    assert again.segment_scores == pytest.approx(score.segment_scores, abs=1e-4)
    assert score.info() == {"comet_model": str(tiny_comet_checkpoint.parents[1]), "num_segments": 3}


def test_comet_model_not_in_the_cache_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    with pytest.raises(ScoringError) as info:
        load_comet("Unbabel/wmt22-comet-da", gpus=0)

    message = str(info.value)

    assert "\n" not in message
    assert "not in the Hugging Face cache" in message and str(tmp_path / "hub") in message
    assert "huggingface-cli download Unbabel/wmt22-comet-da" in message
    assert "comet.download_model('Unbabel/wmt22-comet-da')" in message and "HF_HOME" in message

    with pytest.raises(ScoringError, match=r"does-not-exist/model\.ckpt: the COMET checkpoint does not exist"):
        load_comet(tmp_path / "does-not-exist" / "model.ckpt", gpus=0)

    with pytest.raises(ScoringError, match="not a COMET model directory"):
        load_comet(tmp_path, gpus=0)


def test_comet_without_its_encoder_tokenizer_names_it(tmp_path: Path) -> None:
    checkpoint = write_tiny_comet_checkpoint(tmp_path / "model")

    encoder_dir = checkpoint.parents[1] / "encoder"

    for file in encoder_dir.iterdir():
        file.unlink()

    encoder_dir.rmdir()

    with pytest.raises(ScoringError, match=f"needs the tokenizer and config of its encoder '{encoder_dir}'"):
        load_comet(checkpoint, gpus=0)


# ST: target-language adherence ------------------------------------------------

_SENTENCES = {
    "de": "Der schnelle braune Fuchs springt über den faulen Hund.",
    "en": "The quick brown fox jumps over the lazy dog.",
    "fr": "Le renard brun rapide saute par-dessus le chien paresseux.",
    "es": "El rápido zorro marrón salta sobre el perro perezoso.",
    "it": "La veloce volpe marrone salta sopra il cane pigro.",
    "zh": "今天天气很好，我们去公园散步吧。",
}


def test_languages_of_real_sentences_are_identified() -> None:
    assert identify_languages(list(_SENTENCES.values()) + ["   "]) == [*_SENTENCES, "<empty>"]


def test_adherence_is_the_share_of_hypotheses_in_the_target_language() -> None:
    # Two German outputs, one that drifted into English, one into French, one empty.
    hypotheses = [
        _SENTENCES["de"],
        "Ich habe heute keine Zeit, aber morgen gerne.",
        _SENTENCES["en"],
        _SENTENCES["fr"],
        "",
    ]

    score = score_language_adherence(hypotheses, "de")

    assert score.adherence == pytest.approx(40.0)
    assert (score.num_adherent, score.num_hypotheses) == (2, 5)
    assert score.detected_langs == {"de": 2, "en": 1, "fr": 1, "<empty>": 1}

    # CoVoST's `zh-CN` is Chinese.
    assert score_language_adherence([_SENTENCES["zh"], _SENTENCES["en"]], "zh-CN").adherence == pytest.approx(50.0)


def test_candidate_languages_restrict_identification() -> None:
    # One word is too little for 97 languages; between German and English it is German.
    assert identify_languages(["Ja"]) != ["de"]
    assert identify_languages(["Ja"], candidate_langs=["de", "en"]) == ["de"]

    # The target is always a candidate.
    assert score_language_adherence(["Ja"], "de", candidate_langs=["en"]).adherence == pytest.approx(100.0)

    with pytest.raises(ScoringError, match="py3langid does not know the language `xx`"):
        score_language_adherence(["Hallo"], "xx")


# Spoken QA ---------------------------------------------------------------------


def test_squad_em_and_f1_follow_the_official_normalisation() -> None:
    # Case, punctuation and articles do not count.
    assert squad_exact_match("the Denver Broncos!", ["Denver Broncos"])
    assert not squad_exact_match("Broncos of Denver", ["Denver Broncos"])

    # F1 on bags of tokens: "denver" against "denver broncos" is P 1, R 1/2.
    assert squad_f1("Denver", ["Denver Broncos"]) == pytest.approx(2 / 3)
    # The best over the reference answers.
    assert squad_f1("Denver", ["Carolina Panthers", "Denver"]) == pytest.approx(1.0)
    assert squad_f1("", ["Denver"]) == 0.0

    score = score_squad(
        ["The Denver Broncos", "Denver", "Panthers"], [["Denver Broncos"], ["Denver Broncos", "Broncos"], ["Broncos"]]
    )

    assert score.exact_match == pytest.approx(100.0 / 3)
    assert score.f1 == pytest.approx(100.0 * (1.0 + 2 / 3 + 0.0) / 3)

    with pytest.raises(ScoringError, match="question 0 needs a non-empty list of reference answers"):
        score_squad(["Denver"], ["Denver"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Yes.", True),
        ("**No**", False),
        ("  yes, the candidate names the same team", True),
        ("Verdict: correct", True),
        ("The answer is incorrect.", False),
        ("The candidate answer is not correct: it names another team.", False),
        ("No. Yes would need the year.", False),
        ("TRUE", True),
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_judge_verdicts_are_parsed(reply: str, verdict: bool | None) -> None:
    assert parse_verdict(reply) is verdict


def test_llm_judge_asks_for_each_answer_and_scores_its_verdicts() -> None:
    replies = iter(["Yes.", "No, it is a different team.", "Hmm, hard to say."])

    batches: list[list[str]] = []

    def complete(prompts: list[str]) -> list[str]:
        batches.append(prompts)

        return [next(replies) for _ in prompts]

    judge = LLMJudge(complete, batch_size=2)

    questions = ["Who won?", "Who lost?", "Where?", "When?"]
    references = [["Denver Broncos", "the Broncos"], ["Carolina Panthers"], ["Santa Clara"], ["2016"]]
    candidates = ["The Broncos won.", "Denver", "", "In February 2016, I think"]

    score = judge.judge(questions, references, candidates)

    # The empty answer is not asked about; three prompts in batches of two.
    assert [len(batch) for batch in batches] == [2, 1]
    assert batches[0][0] == judge.build_prompt("Who won?", ["Denver Broncos", "the Broncos"], "The Broncos won.")
    assert "Question: Who won?" in batches[0][0]
    assert "Reference answer(s): Denver Broncos | the Broncos" in batches[0][0]
    assert "Candidate answer: The Broncos won." in batches[0][0]
    assert "Candidate answer: In February 2016, I think" in batches[1][0]

    assert score.verdicts == [True, False, False, False]
    assert score.judge_accuracy == pytest.approx(25.0)
    assert (score.num_unparsed, score.num_empty) == (1, 1)

    with pytest.raises(ScoringError, match="returned 0 replies to 1 prompts"):
        LLMJudge(lambda prompts: []).judge(["Q?"], [["A"]], ["A"])


# Reports -----------------------------------------------------------------------


def test_reports_round_trip_through_json_and_make_the_papers_table(tmp_path: Path) -> None:
    reports = [
        ScoreReport(system="llama_it_st", task="st", test_set="EP es").add(
            score_translation(_EN_HYPOTHESES, _EN_REFERENCES, tgt_lang="es")
        ),
        ScoreReport(system="llama_it_st", task="st", test_set="CV zh", metrics={"comet": 78.64, "bleu": 30.0}),
        ScoreReport(system="eurollm_zero_shot", task="st", test_set="CV zh", metrics={"comet": 64.8}),
    ]

    reports[0].metrics["comet"] = 84.5

    scores_file = tmp_path / "scores.json"

    write_scores(scores_file, reports)

    assert read_scores(scores_file) == reports
    assert "tok:13a" in str(json.loads(scores_file.read_text())["scores"][0]["info"]["bleu_signature"])

    bleu, chrf = reports[0].metrics["bleu"], reports[0].metrics["chrf"]

    assert format_scores_table(reports) == "\n".join(
        [
            "| system | metric | EP es | CV zh |",
            "|---|---|---|---|",
            f"| llama_it_st | BLEU | {bleu:.1f} | 30.0 |",
            f"| llama_it_st | chrF | {chrf:.1f} | – |",
            "| llama_it_st | COMET | 84.5 | 78.6 |",
            "| eurollm_zero_shot | COMET | – | 64.8 |",
        ]
    )

    assert format_scores_table(reports, metrics=["comet"]).splitlines()[2:] == [
        "| llama_it_st | COMET | 84.5 | 78.6 |",
        "| eurollm_zero_shot | COMET | – | 64.8 |",
    ]

    (tmp_path / "bad.json").write_text('{"version": 1, "scores": [{"system": "x"}]}')

    with pytest.raises(ScoringError, match=r"bad\.json: `scores\[0\]` must have"):
        read_scores(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("hypothesis", "reference", "expected"),
    [
        ([1, 3, 4, 5], [1, 2, 3, 4], 2),  # one deletion, one insertion
        ([7, 2, 3], [1, 2, 3], 1),
        ([], [1, 2], 2),
        ([1, 2, 3], [], 3),
        (["the", "cat"], ["the", "black", "cat"], 1),
    ],
)
def test_edit_distance_counts_insertions_deletions_and_substitutions(
    hypothesis: list[object], reference: list[object], expected: int
) -> None:
    assert edit_distance(hypothesis, reference) == expected
