from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fairseq2_speechmapper.demo import DemoAssets

# Before anything imports fairseq2: generated cards are read from this cache
# directory once, when fairseq2 builds its asset store; progress bars would only
# clutter the test output.
_CACHE_DIR = Path(tempfile.mkdtemp(prefix="speechmapper-test-cache-"))

os.environ["FAIRSEQ2_SPEECHMAPPER_CACHE_DIR"] = str(_CACHE_DIR)
os.environ["FAIRSEQ2_NO_PROGRESS"] = "1"


def pytest_sessionstart(session: pytest.Session) -> None:
    from fairseq2_speechmapper.asset_store.paths import get_cache_cards_dir
    from fairseq2_speechmapper.cli.tiny_assets import write_tiny_assets

    write_tiny_assets(_CACHE_DIR / "tiny", get_cache_cards_dir())


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The cache directory holding the tiny assets and their cards."""
    return _CACHE_DIR


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    """The real demo assets (converted SmolLM2 and Whisper, the corpus), built
    once per session for the slow tests; skipped where a source is missing."""
    from fairseq2_speechmapper.demo import DemoAssetError, make_demo_assets

    try:
        return make_demo_assets(tmp_path_factory.mktemp("demo_assets"))
    except DemoAssetError as ex:
        pytest.skip(str(ex))
