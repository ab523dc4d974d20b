"""Scores the hypothesis lines of every rank once generation has finished."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from fairseq2.logging import log

from fairseq2_speechmapper.recipes.evaluate.config import ScoringSection
from fairseq2_speechmapper.scoring import (
    LLMJudge,
    ScoreReport,
    load_comet,
    score_language_adherence,
    score_squad,
    score_translation,
    score_wer,
)


def read_hypotheses(files: Sequence[Path]) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []

    for path in files:
        with path.open(encoding="utf-8") as fp:
            records.extend(json.loads(line) for line in fp if line.strip())

    return records


def score_hypotheses(
    records: Sequence[dict[str, object]],
    *,
    system: str,
    test_set: str,
    task: str,
    section: ScoringSection,
    complete_judge_prompts: Callable[[list[str]], list[str]] | None = None,
) -> list[ScoreReport]:
    """One report per test set; translations into several languages are
    scored per target language."""
    hypotheses = [str(r["hypothesis"]) for r in records]
    references = [[str(a) for a in r["references"]] for r in records]  # type: ignore[attr-defined]

    if task == "asr":
        report = ScoreReport(system=system, task=task, test_set=test_set)

        return [report.add(score_wer(hypotheses, [refs[0] for refs in references]))]

    if task == "sqa":
        report = ScoreReport(system=system, task=task, test_set=test_set)

        report.add(score_squad(hypotheses, references))

        if complete_judge_prompts is not None:
            judge = LLMJudge(complete_judge_prompts)

            questions = [str(r.get("question", "")) for r in records]

            report.add(judge.judge(questions, references, hypotheses))

        return [report]

    comet = None if section.comet_model is None else load_comet(section.comet_model)

    reports = []

    for tgt_lang in sorted({str(r["tgt_lang"]) for r in records}):
        indices = [i for i, r in enumerate(records) if r["tgt_lang"] == tgt_lang]

        pair_hypotheses = [hypotheses[i] for i in indices]
        pair_references = [references[i][0] for i in indices]

        report = ScoreReport(system=system, task=task, test_set=f"{test_set}:{tgt_lang}")

        report.add(score_translation(pair_hypotheses, pair_references, tgt_lang=tgt_lang))

        if comet is not None:
            # The manifest's transcript, case kept: COMET was trained on cased sources.
            sources = [str(records[i]["source_text"]) for i in indices]

            log.info("Scoring {} translations into {} with COMET.", len(indices), tgt_lang)

            report.add(comet.score(sources, pair_hypotheses, pair_references, batch_size=section.comet_batch_size))

        if section.language_adherence:
            report.add(score_language_adherence(pair_hypotheses, tgt_lang))

        reports.append(report)

    return reports
