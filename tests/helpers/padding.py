"""How much of a set of length batches is padding (the bucketing measure of
``tests/test_datasets.py`` and ``benchmarks/pretrain.py``)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def padding_fraction(batches: Sequence[Sequence[dict[str, object]]]) -> float:
    """The share of padded audio in ``batches``."""
    real = sum(float(e["duration"]) for b in batches for e in b)  # type: ignore[arg-type, misc]

    padded = sum(len(b) * max(float(e["duration"]) for e in b) for b in batches)  # type: ignore[arg-type, misc]

    return 0.0 if math.isclose(padded, 0.0) else 1.0 - real / padded
