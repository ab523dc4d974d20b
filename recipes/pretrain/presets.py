"""The presets of the pretraining recipe: YAML files in ``presets/``."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fairseq2_speechmapper.recipe_support.presets import RecipePresets

PRETRAIN_PRESETS: Final = RecipePresets("pretraining", Path(__file__).parent / "presets", default="demo")
