"""The presets of the instruction-tuning recipe: YAML files in ``presets/``."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fairseq2_speechmapper.recipe_support.presets import RecipePresets

INSTRUCT_PRESETS: Final = RecipePresets("instruction-tuning", Path(__file__).parent / "presets", default="demo")
