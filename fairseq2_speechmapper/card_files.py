from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml


def write_card_file(card_file: Path, cards: Sequence[dict[str, object]]) -> None:
    """Writes ``cards`` as a multi-document YAML file that fairseq2's asset
    store reads; atomically, so a killed run never leaves half a card."""
    text = yaml.safe_dump_all(list(cards), sort_keys=False)

    card_file.parent.mkdir(parents=True, exist_ok=True)

    tmp_file = card_file.with_suffix(card_file.suffix + ".tmp")

    tmp_file.write_text(text, encoding="utf-8")

    tmp_file.replace(card_file)
