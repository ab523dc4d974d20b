from __future__ import annotations

from fairseq2_speechmapper.cli.main import main as main
