"""The presets of the evaluation recipe: YAML files in ``presets/``."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fairseq2_speechmapper.recipe_support.presets import RecipePresets

EVALUATE_PRESETS: Final = RecipePresets("evaluation", Path(__file__).parent / "presets", default="demo")
