"""The OpenMP wait policy of the command line's processes.

libgomp's idle intra-op workers spin between parallel regions unless
``OMP_WAIT_POLICY`` says otherwise. A step whose main thread spends most of its
time in Python (small ops, metrics, the data reader's callbacks: pretraining
from the feature cache, where the speech encoder no longer runs) then leaves the workers
spinning for most of the step, on cores that the main thread and the data
reader need: on 2 busy cores with 2 intra-op threads, 50 tiny cached
pretraining steps took 24 s of compute instead of 0.9 s, slower than running
the speech encoder on the fly (1.6 s; perf: half the samples in libgomp's spin and
barrier loops). Passive workers sleep instead, at no cost to the on-the-fly
steps (measured), and GPU steps hardly use them.
"""

from __future__ import annotations

import os
from typing import Final

OMP_WAIT_POLICY: Final = "PASSIVE"


def configure_openmp() -> None:
    """Makes idle OpenMP workers sleep, unless the user set a wait policy.
    Takes effect only before torch (with its OpenMP runtime) is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
