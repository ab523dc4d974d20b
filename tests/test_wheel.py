from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO_DIR = Path(__file__).parent.parent

# Building a wheel takes a while.
pytestmark = pytest.mark.slow

# Optional parts, each in its extra: unbabel-comet's runtime dependencies, and
# transformers' GGUF loader for the demo's conversion.
COMET_PACKAGES = {"entmax", "jsonargparse", "pandas", "pytorch-lightning", "scipy", "torchmetrics", "setuptools"}

DEMO_PACKAGES = {"gguf", "accelerate"}


@pytest.fixture(scope="module")
def wheel_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist_dir = tmp_path_factory.mktemp("dist")

    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist_dir), str(REPO_DIR)],
        check=True,
        capture_output=True,
        timeout=600,
    )

    (wheel,) = dist_dir.glob("fairseq2_speechmapper-*.whl")

    return wheel


def test_wheel_holds_every_module_and_card(wheel_file: Path) -> None:
    with zipfile.ZipFile(wheel_file) as wheel:
        names = set(wheel.namelist())

    expected = {
        f"fairseq2_speechmapper/{path.relative_to(REPO_DIR / 'fairseq2_speechmapper').as_posix()}"
        for path in (REPO_DIR / "fairseq2_speechmapper").rglob("*.py")
    }
    expected |= {
        f"fairseq2_speechmapper/cards/{path.relative_to(REPO_DIR / 'assets').as_posix()}"
        for path in (REPO_DIR / "assets").rglob("*.yaml")
    }
    expected |= {
        f"fairseq2_speechmapper/recipes/{path.relative_to(REPO_DIR / 'recipes').as_posix()}"
        for path in (REPO_DIR / "recipes").rglob("*")
        if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts
    }

    assert expected - names == set()

    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))

    with zipfile.ZipFile(wheel_file) as wheel:
        text = wheel.read(entry_points).decode()

    assert "[fairseq2.extension]" in text
    assert "fairseq2 = fairseq2_speechmapper.cli:main" in text


def test_wheel_declares_the_optional_parts_as_extras(wheel_file: Path) -> None:
    with zipfile.ZipFile(wheel_file) as wheel:
        metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))

        lines = wheel.read(metadata).decode().splitlines()

    requirements = [
        Requirement(line.removeprefix("Requires-Dist:").strip()) for line in lines if line.startswith("Requires-Dist:")
    ]

    def names(extra: str | None) -> set[str]:
        return {
            r.name.lower()
            for r in requirements
            if (r.marker is None if extra is None else r.marker is not None and r.marker.evaluate({"extra": extra}))
        }

    core = names(None)

    assert {"fairseq2", "torch", "jiwer", "editdistance"} <= core
    assert core & (COMET_PACKAGES | DEMO_PACKAGES) == set()

    assert COMET_PACKAGES <= names("comet")
    assert DEMO_PACKAGES <= names("demo")


def test_wheel_in_another_venv_shows_our_cards(wheel_file: Path, tmp_path: Path) -> None:
    venv_dir = tmp_path / "venv"

    subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True, timeout=300)

    venv_python = venv_dir / "bin" / "python"

    subprocess.run(
        [str(venv_python), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel_file)],
        check=True,
        timeout=300,
    )

    # The new venv borrows fairseq2 and torch from this one (a plain path in a
    # .pth file, so this venv's editable install of the package is not active),
    # and from any site-packages this one chains to through a .pth file.
    (venv_site_packages,) = (venv_dir / "lib").glob("python*/site-packages")

    borrowed = dict.fromkeys([*site.getsitepackages(), *(p for p in sys.path if Path(p).name == "site-packages")])

    (venv_site_packages / "borrowed.pth").write_text("\n".join(borrowed) + "\n")

    # fairseq2n finds its native libraries (oneTBB) in the venv's own lib/.
    for library in (Path(sys.prefix) / "lib").glob("*.so*"):
        (venv_dir / "lib" / library.name).symlink_to(library)

    env = {**os.environ, "FAIRSEQ2_SPEECHMAPPER_CACHE_DIR": str(tmp_path / "cache")}

    # Outside the repository, so that nothing is imported from the source tree.
    result = subprocess.run(
        [str(venv_dir / "bin" / "fairseq2"), "assets", "list", "--kind", "model"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    assert "speechmapper_paper_llama3_1_8b_instruct" in result.stdout

    location = subprocess.run(
        [str(venv_python), "-c", "import fairseq2_speechmapper.cards as c; print(c.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )

    assert location.stdout.strip().startswith(str(venv_site_packages))
