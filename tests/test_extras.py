"""The optional parts (COMET, the demo's converters) say which extra to
install when its packages are missing."""

from __future__ import annotations

from collections.abc import Callable
from importlib.machinery import ModuleSpec
from importlib.util import find_spec
from pathlib import Path

import pytest

import fairseq2_speechmapper.errors
from fairseq2_speechmapper.cli.main import main
from fairseq2_speechmapper.errors import MissingExtraError, check_extra_installed
from fairseq2_speechmapper.scoring import comet_metric


def without(*modules: str) -> Callable[[str], ModuleSpec | None]:
    """``find_spec`` as if ``modules`` were not installed."""
    return lambda name: None if name in modules else find_spec(name)


def test_a_missing_package_names_its_extra() -> None:
    check_extra_installed("comet", "COMET", ["json"])

    with pytest.raises(MissingExtraError) as exc_info:
        check_extra_installed("comet", "COMET", ["json", "no_such_module_anywhere"])

    assert str(exc_info.value) == (
        "COMET needs the optional packages of the `comet` extra (no_such_module_anywhere missing): "
        "run `pip install 'fairseq2-speechmapper[comet]'`."
    )


def test_comet_without_its_extra_or_itself_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fairseq2_speechmapper.errors, "find_spec", without("pandas"))

    with pytest.raises(MissingExtraError, match=r"\(pandas missing\).*\[comet\]"):
        comet_metric.import_comet()

    monkeypatch.undo()
    monkeypatch.setattr(comet_metric, "find_spec", without("comet"))

    with pytest.raises(MissingExtraError, match=r"pip install --no-deps unbabel-comet==2\.2\.7"):
        comet_metric.import_comet()


def test_make_demo_assets_without_the_demo_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("FAIRSEQ2_SPEECHMAPPER_TRACEBACK", raising=False)
    monkeypatch.setattr(fairseq2_speechmapper.errors, "find_spec", without("gguf"))

    with pytest.raises(SystemExit) as exit_info:
        main(["speechmapper", "make-demo-assets", str(tmp_path)])

    assert exit_info.value.code == 2

    assert capsys.readouterr().err.strip().splitlines() == [
        "error: Converting the demo models needs the optional packages of the `demo` extra (gguf missing): "
        "run `pip install 'fairseq2-speechmapper[demo]'`."
    ]

    assert not any(tmp_path.iterdir())
