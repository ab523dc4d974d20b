from __future__ import annotations

# Before anything imports torch: its OpenMP runtime reads the wait policy once.
from fairseq2_speechmapper.cli.openmp import configure_openmp

configure_openmp()

from fairseq2_speechmapper.cli.main import main as main  # noqa: E402
