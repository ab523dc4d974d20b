"""Reads back the scores file that ``evaluate`` writes
(:func:`fairseq2_speechmapper.scoring.write_scores`)."""

from __future__ import annotations

import json
from pathlib import Path

from fairseq2_speechmapper.scoring import ScoreReport, ScoringError
from fairseq2_speechmapper.scoring.report import SCORES_FORMAT_VERSION


def read_scores(path: Path) -> list[ScoreReport]:
    """Reads a file :func:`write_scores` wrote.

    :raises ScoringError: if the file is missing or not such a file.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as ex:
        raise ScoringError(f"{path}: the scores file cannot be read ({ex.strerror}).") from None
    except json.JSONDecodeError as ex:
        raise ScoringError(f"{path}:{ex.lineno}: the scores file is not valid JSON ({ex.msg}).") from None

    if (
        not isinstance(document, dict)
        or document.get("version") != SCORES_FORMAT_VERSION
        or not isinstance(document.get("scores"), list)
    ):
        raise ScoringError(
            f"{path}: not a scores file of version {SCORES_FORMAT_VERSION} (`version` and a `scores` list)."
        )

    reports = []

    for index, entry in enumerate(document["scores"]):
        try:
            reports.append(ScoreReport(**entry))
        except TypeError:
            raise ScoringError(
                f"{path}: `scores[{index}]` must have `system`, `task`, `test_set`, `metrics` and `info`."
            ) from None

    return reports
