"""The presets of the pretraining recipe: YAML files in ``presets/``."""

from __future__ import annotations

from pathlib import Path
from typing import Final

PRESET_DIR: Final = Path(__file__).parent / "presets"

DEFAULT_PRESET: Final = "demo"


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def get_preset_file(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"`{name}` is not a pretraining preset; the presets are {', '.join(list_presets())}.")

    return path
