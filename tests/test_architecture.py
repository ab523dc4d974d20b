"""The layering: the library (``fairseq2_speechmapper/``) never imports the
recipes, and a recipe never imports another recipe; only the command line
(``fairseq2_speechmapper/cli``) sits on top of both."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LIBRARY_DIR = ROOT / "fairseq2_speechmapper"

RECIPES_DIR = ROOT / "recipes"

# `recipes/` is installed as this package.
RECIPES_PACKAGE = "fairseq2_speechmapper.recipes"


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """Every module ``source`` imports (absolute names; relative imports
    resolved against ``package``, the package of its file), with its line."""
    tree = ast.parse(source)

    modules = []

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))

            modules.append((node.lineno, base))

            # `from fairseq2_speechmapper import recipes`
            modules.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)

    return modules


def _package_of(path: Path) -> str:
    if path.is_relative_to(RECIPES_DIR):
        parts = [RECIPES_PACKAGE, *path.relative_to(RECIPES_DIR).parent.parts]
    else:
        parts = list(path.relative_to(ROOT).parent.parts)

    return ".".join(parts)


def _recipe_of(module: str) -> str | None:
    """The recipe a module belongs to (``pretrain`` for
    ``fairseq2_speechmapper.recipes.pretrain.units``), else ``None``."""
    for prefix in (RECIPES_PACKAGE + ".", "recipes."):
        if module.startswith(prefix):
            return module[len(prefix) :].split(".")[0]

    if module in (RECIPES_PACKAGE, "recipes"):
        return ""

    return None


def library_violations() -> list[str]:
    violations = []

    for path in sorted(LIBRARY_DIR.rglob("*.py")):
        if path.is_relative_to(LIBRARY_DIR / "cli"):
            continue

        for line, module in imported_modules(path.read_text(encoding="utf-8"), _package_of(path)):
            if _recipe_of(module) is not None:
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {module}")

    return violations


def recipe_violations() -> list[str]:
    violations = []

    for path in sorted(RECIPES_DIR.rglob("*.py")):
        own_recipe = path.relative_to(RECIPES_DIR).parts[0]

        for line, module in imported_modules(path.read_text(encoding="utf-8"), _package_of(path)):
            recipe = _recipe_of(module)

            if recipe is not None and recipe != own_recipe:
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {module}")

    return violations


def test_the_library_imports_no_recipe() -> None:
    assert library_violations() == []


def test_no_recipe_imports_another_recipe() -> None:
    assert recipe_violations() == []


def test_every_recipe_is_a_folder_of_its_own() -> None:
    assert sorted(p.name for p in RECIPES_DIR.glob("*.py")) == ["__init__.py"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from fairseq2_speechmapper.recipes.pretrain.config import PretrainConfig", True),
        ("import fairseq2_speechmapper.recipes.pretrain.recipe as recipe", True),
        ("from fairseq2_speechmapper import recipes", True),
        ("from ..recipes.pretrain import units", True),
        ("from fairseq2_speechmapper.stage1 import create_stage1_loss", False),
    ],
)
def test_the_walk_finds_recipe_imports(source: str, expected: bool) -> None:
    found = [m for _, m in imported_modules(source, "fairseq2_speechmapper.speech_llm") if _recipe_of(m) is not None]

    assert bool(found) == expected


def test_the_walk_finds_what_the_layering_had_before() -> None:
    # A library module of old, and a recipe importing another.
    library = "from fairseq2_speechmapper.recipes.pretrain.stage1 import SFMFeatures\n"
    recipe = "from fairseq2_speechmapper.recipes.pretrain.recipe import open_dataset\n"

    assert [m for _, m in imported_modules(library, "fairseq2_speechmapper.speech_llm") if _recipe_of(m) == "pretrain"]
    assert _recipe_of(imported_modules(recipe, "fairseq2_speechmapper.recipes.instruct")[0][1]) == "pretrain"
