"""The layering: the library (``fairseq2_speechmapper/``) never imports the
recipes, and a recipe never imports another recipe; only the command line
(``fairseq2_speechmapper/cli``) sits on top of both, and nothing imports it.
No two modules import each other, directly or through others."""

from __future__ import annotations

import ast
from collections.abc import Mapping, Set
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LIBRARY_DIR = ROOT / "fairseq2_speechmapper"

RECIPES_DIR = ROOT / "recipes"

# `recipes/` is installed as this package.
RECIPES_PACKAGE = "fairseq2_speechmapper.recipes"

CLI_PACKAGE = "fairseq2_speechmapper.cli"


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


def _module_of(path: Path) -> str:
    package = _package_of(path)

    return package if path.name == "__init__.py" else f"{package}.{path.stem}"


def _package_sources() -> list[Path]:
    return sorted(LIBRARY_DIR.rglob("*.py")) + sorted(RECIPES_DIR.rglob("*.py"))


def import_graph() -> dict[str, set[str]]:
    """Each module of the package (library and recipes) and the modules of the
    package it imports, anywhere in its file (lazy and type-checking imports
    too: they are circles all the same once someone moves them up)."""
    sources = {_module_of(path): path for path in _package_sources()}

    graph = {}

    for module, path in sources.items():
        imports = imported_modules(path.read_text(encoding="utf-8"), _package_of(path))

        graph[module] = {imported for _, imported in imports if imported in sources and imported != module}

    return graph


def find_cycle(graph: Mapping[str, Set[str]]) -> list[str]:
    """One circle of imports in ``graph`` (its first module repeated at its
    end), else an empty list."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as ex:
        cycle: list[str] = ex.args[1]

        return cycle

    return []


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


def cli_violations() -> list[str]:
    violations = []

    for path in _package_sources():
        # `python -m fairseq2_speechmapper` is the console script's twin.
        if path.is_relative_to(LIBRARY_DIR / "cli") or path == LIBRARY_DIR / "__main__.py":
            continue

        for line, module in imported_modules(path.read_text(encoding="utf-8"), _package_of(path)):
            if module == CLI_PACKAGE or module.startswith(CLI_PACKAGE + "."):
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {module}")

    return violations


def test_the_library_imports_no_recipe() -> None:
    assert library_violations() == []


def test_no_recipe_imports_another_recipe() -> None:
    assert recipe_violations() == []


def test_nothing_outside_the_command_line_imports_it() -> None:
    assert cli_violations() == []


def test_no_module_imports_itself_through_others() -> None:
    graph = import_graph()

    # The walk sees the package: the command line and its commands, at least.
    assert {"fairseq2_speechmapper.cli.commands", "fairseq2_speechmapper.recipes.pretrain.recipe"} <= graph.keys()

    assert find_cycle(graph) == []


def test_the_cycle_finder_finds_the_circles_of_old() -> None:
    # The command line's circle, and the demo builder's through a third module.
    cli = {
        "cli.main": {"cli.errors", "cli.commands"},
        "cli.commands": {"cli.main", "prepare.cli"},
        "prepare.cli": {"cli.errors"},
        "cli.errors": set(),
    }
    demo = {"demo.builder": {"demo.large_corpus"}, "demo.large_corpus": {"demo.parts"}, "demo.parts": {"demo.builder"}}

    assert sorted(find_cycle(cli)[:-1]) == ["cli.commands", "cli.main"]
    assert sorted(find_cycle(demo)[:-1]) == ["demo.builder", "demo.large_corpus", "demo.parts"]

    # Fan-in without a circle is fine.
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_walk_finds_a_lazy_import_of_the_command_line() -> None:
    source = "def run() -> None:\n    from ..cli.errors import CommandError\n"

    assert [m for _, m in imported_modules(source, "fairseq2_speechmapper.prepare")] == [
        "fairseq2_speechmapper.cli.errors",
        "fairseq2_speechmapper.cli.errors.CommandError",
    ]


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
    library = "from fairseq2_speechmapper.recipes.pretrain.stage1 import SpeechEncoderFeatures\n"
    recipe = "from fairseq2_speechmapper.recipes.pretrain.recipe import open_dataset\n"

    assert [m for _, m in imported_modules(library, "fairseq2_speechmapper.speech_llm") if _recipe_of(m) == "pretrain"]
    assert _recipe_of(imported_modules(recipe, "fairseq2_speechmapper.recipes.instruct")[0][1]) == "pretrain"
