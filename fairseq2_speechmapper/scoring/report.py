"""Scores of systems on test sets: a JSON file, and a table shaped like the
paper's (rows: system and metric; columns: test sets)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, Protocol, final

from fairseq2_speechmapper.files import write_text_atomically

SCORES_FORMAT_VERSION: Final = 1

# Table rows in this order; other metrics follow by name.
_METRIC_ORDER: Final = ("wer", "bleu", "chrf", "comet", "adherence", "exact_match", "f1", "judge_accuracy")

METRIC_LABELS: Final = {
    "wer": "WER",
    "bleu": "BLEU",
    "chrf": "chrF",
    "comet": "COMET",
    "adherence": "target lang. %",
    "exact_match": "EM",
    "f1": "F1",
    "judge_accuracy": "judge acc.",
}


class Score(Protocol):
    """What the scorers return (:class:`WerScore`, :class:`CometScore`, ...)."""

    def metrics(self) -> dict[str, float]: ...

    def info(self) -> dict[str, object]: ...


@final
@dataclass(kw_only=True)
class ScoreReport:
    """The scores of one system on one test set."""

    system: str
    """The model or set-up scored (a card name, a run name)."""

    task: str
    """``asr``, ``st`` or ``sqa``."""

    test_set: str
    """The test set, e.g. ``europarl_st_en_es:test``."""

    metrics: dict[str, float] = field(default_factory=dict)
    """Metric name -> value; all on a 0-100 scale (WER may exceed 100)."""

    info: dict[str, object] = field(default_factory=dict)
    """How they were computed: sacrebleu signatures, COMET model, counts."""

    def add(self, score: Score) -> ScoreReport:
        """Adds the metrics and details of ``score``; returns ``self``."""
        self.metrics.update(score.metrics())
        self.info.update(score.info())

        return self


def write_scores(path: Path, reports: Sequence[ScoreReport]) -> None:
    """Writes ``reports`` as a JSON file (``{"version": 1, "scores": [...]}``)."""
    document = {"version": SCORES_FORMAT_VERSION, "scores": [asdict(report) for report in reports]}

    write_text_atomically(path, [json.dumps(document, indent=2, ensure_ascii=False), "\n"])


def format_scores_table(
    reports: Sequence[ScoreReport], *, metrics: Sequence[str] | None = None, precision: int = 1
) -> str:
    """A Markdown table of ``reports``: one row per system and metric, one
    column per test set, as the paper lays out its results; a missing score is
    ``–``.

    :param metrics: the metrics to show, in this order; all by default.
    """
    if metrics is None:
        names = {name for report in reports for name in report.metrics}

        metrics = [m for m in _METRIC_ORDER if m in names] + sorted(names.difference(_METRIC_ORDER))

    test_sets = list(dict.fromkeys(report.test_set for report in reports))

    systems = list(dict.fromkeys(report.system for report in reports))

    values = {(r.system, r.test_set, m): v for r in reports for m, v in r.metrics.items()}

    lines = [
        "| " + " | ".join(["system", "metric", *test_sets]) + " |",
        "|" + "---|" * (2 + len(test_sets)),
    ]

    for system in systems:
        for metric in metrics:
            cells = [_format_value(values.get((system, test_set, metric)), precision) for test_set in test_sets]

            if all(cell == "–" for cell in cells):
                continue

            lines.append("| " + " | ".join([system, METRIC_LABELS.get(metric, metric), *cells]) + " |")

    return "\n".join(lines)


def _format_value(value: float | None, precision: int) -> str:
    if value is None or math.isnan(value):
        return "–"

    return f"{value:.{precision}f}"
