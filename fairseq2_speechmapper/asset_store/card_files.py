from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from fairseq2_speechmapper.files import write_text_atomically


def write_card_file(card_file: Path, cards: Sequence[dict[str, object]]) -> None:
    """Writes ``cards`` as a multi-document YAML file that fairseq2's asset
    store reads; atomically, so a killed run never leaves half a card."""
    write_text_atomically(card_file, [yaml.safe_dump_all(list(cards), sort_keys=False)])
