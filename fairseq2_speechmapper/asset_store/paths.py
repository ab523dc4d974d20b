from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

CACHE_DIR_ENV: Final = "FAIRSEQ2_SPEECHMAPPER_CACHE_DIR"


def get_cache_dir() -> Path:
    """Returns where generated assets (tiny test models, converted demo models,
    the demo corpus) and their cards live: ``$FAIRSEQ2_SPEECHMAPPER_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/fairseq2_speechmapper``, else
    ``~/.cache/fairseq2_speechmapper``."""
    path = os.environ.get(CACHE_DIR_ENV)
    if path:
        return Path(path).expanduser()

    xdg_cache_home = os.environ.get("XDG_CACHE_HOME")
    if xdg_cache_home:
        return Path(xdg_cache_home).expanduser() / "fairseq2_speechmapper"

    return Path.home() / ".cache" / "fairseq2_speechmapper"


def get_cache_cards_dir() -> Path:
    """Returns the directory of the cards of generated assets; the extension
    registers it with fairseq2's asset store."""
    return get_cache_dir() / "cards"


def default_mapper_card_name(output_dir: Path) -> str:
    """The card name a training run writes by default: ``speechmapper_`` + its
    output directory's name."""
    return "speechmapper_" + re.sub(r"[^A-Za-z0-9_]+", "_", output_dir.resolve().name).strip("_").lower()
