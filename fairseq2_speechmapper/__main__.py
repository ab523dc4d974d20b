from __future__ import annotations

from fairseq2_speechmapper.cli import main

main()
