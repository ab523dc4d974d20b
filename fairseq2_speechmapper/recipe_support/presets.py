"""Presets: YAML configuration files next to each recipe, named after what
they run or reproduce."""

from __future__ import annotations

from pathlib import Path
from typing import final


@final
class RecipePresets:
    def __init__(self, recipe_name: str, preset_dir: Path, *, default: str) -> None:
        self.recipe_name = recipe_name
        self.preset_dir = preset_dir
        self.default = default
        """The preset that runs when no configuration is given (the demo)."""

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.preset_dir.glob("*.yaml"))

    def file(self, name: str) -> Path:
        path = self.preset_dir / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"`{name}` is not a {self.recipe_name} preset; the presets are {', '.join(self.names())}.")

        return path
