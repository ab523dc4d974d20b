"""Scores for ``fairseq2 speechmapper evaluate``: WER (ASR), BLEU/chrF, COMET
and target-language adherence (ST), SQuAD EM/F1 and an LLM judge (spoken QA),
and their report.

Every scorer returns a small frozen dataclass with ``metrics()`` (name ->
value, on a 0-100 scale) and ``info()`` (how it was computed), which
:meth:`ScoreReport.add` collects::

    report = ScoreReport(system="llama_it_st", task="st", test_set="europarl_st_en_es:test")
    report.add(score_translation(hypotheses, references, tgt_lang="es"))
    report.add(load_comet("Unbabel/wmt22-comet-da").score(sources, hypotheses, references))
    report.add(score_language_adherence(hypotheses, "es"))
    write_scores(out_dir / "scores.json", [report])
    print(format_scores_table([report]))

COMET and py3langid are imported when first used.
"""

from __future__ import annotations

from fairseq2_speechmapper.scoring.asr import WerScore as WerScore
from fairseq2_speechmapper.scoring.asr import score_wer as score_wer
from fairseq2_speechmapper.scoring.comet_metric import DEFAULT_COMET_MODEL as DEFAULT_COMET_MODEL
from fairseq2_speechmapper.scoring.comet_metric import CometScore as CometScore
from fairseq2_speechmapper.scoring.comet_metric import CometScorer as CometScorer
from fairseq2_speechmapper.scoring.comet_metric import load_comet as load_comet
from fairseq2_speechmapper.scoring.errors import ScoringError as ScoringError
from fairseq2_speechmapper.scoring.language import AdherenceScore as AdherenceScore
from fairseq2_speechmapper.scoring.language import identify_languages as identify_languages
from fairseq2_speechmapper.scoring.language import score_language_adherence as score_language_adherence
from fairseq2_speechmapper.scoring.qa import DEFAULT_JUDGE_PROMPT as DEFAULT_JUDGE_PROMPT
from fairseq2_speechmapper.scoring.qa import JudgeScore as JudgeScore
from fairseq2_speechmapper.scoring.qa import LLMJudge as LLMJudge
from fairseq2_speechmapper.scoring.qa import SquadScore as SquadScore
from fairseq2_speechmapper.scoring.qa import normalize_squad_answer as normalize_squad_answer
from fairseq2_speechmapper.scoring.qa import parse_verdict as parse_verdict
from fairseq2_speechmapper.scoring.qa import score_squad as score_squad
from fairseq2_speechmapper.scoring.report import ScoreReport as ScoreReport
from fairseq2_speechmapper.scoring.report import format_scores_table as format_scores_table
from fairseq2_speechmapper.scoring.report import write_scores as write_scores
from fairseq2_speechmapper.scoring.translation import TranslationScore as TranslationScore
from fairseq2_speechmapper.scoring.translation import bleu_tokenizer_for as bleu_tokenizer_for
from fairseq2_speechmapper.scoring.translation import score_translation as score_translation
