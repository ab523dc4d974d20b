from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def run_cli(
    *args: str, cache_dir: Path, module: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    if module:
        command = [sys.executable, "-m", "fairseq2_speechmapper", *args]
    else:
        command = [str(Path(sys.executable).parent / "fairseq2"), *args]

    full_env = {**os.environ, "FAIRSEQ2_SPEECHMAPPER_CACHE_DIR": str(cache_dir), **(env or {})}

    full_env.pop("FAIRSEQ2_SPEECHMAPPER_TRACEBACK", None)

    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=300)


SUBCOMMANDS = ["pretrain", "instruct", "evaluate", "generate", "prepare", "extract-features"]


@pytest.mark.parametrize("module", [False, True])
def test_help_lists_groups_and_subcommands(cache_dir: Path, module: bool) -> None:
    top = run_cli("--help", cache_dir=cache_dir, module=module)

    assert top.returncode == 0
    assert "speechmapper" in top.stdout and "assets" in top.stdout

    group = run_cli("speechmapper", "--help", cache_dir=cache_dir, module=module)

    assert group.returncode == 0

    for name in SUBCOMMANDS:
        assert f"  {name} " in group.stdout, name


def test_unknown_subcommand_is_a_usage_error(cache_dir: Path) -> None:
    result = run_cli("speechmapper", "pretrian", cache_dir=cache_dir)

    assert result.returncode == 2
    assert "invalid choice: 'pretrian'" in result.stderr


def test_assets_list_and_show_include_our_cards(cache_dir: Path) -> None:
    listing = run_cli("assets", "list", "--kind", "model", cache_dir=cache_dir)

    assert listing.returncode == 0, listing.stderr
    assert "speechmapper_paper_llama3_1_8b_instruct" in listing.stdout
    assert "package:fairseq2_speechmapper.cards" in listing.stdout
    # The generated tiny cards are found in the cache directory.
    assert "speechmapper_tiny" in listing.stdout

    shown = run_cli("assets", "show", "speechmapper_paper_llama3_1_8b_instruct", cache_dir=cache_dir)

    assert shown.returncode == 0, shown.stderr
    assert "paper_llama3_8b" in shown.stdout
    assert "w2vbert2_600m" in shown.stdout


def test_mistyped_card_name_gives_one_line_and_nonzero_exit(cache_dir: Path) -> None:
    result = run_cli("speechmapper", "model-info", "speechmapper_tinny", cache_dir=cache_dir)

    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "speechmapper_tinny" in result.stderr
    assert "Traceback" not in result.stderr

    shown = run_cli("assets", "show", "speechmapper_tinny", cache_dir=cache_dir)

    assert shown.returncode != 0


def test_missing_checkpoint_gives_one_line_naming_the_file(tmp_path: Path) -> None:
    cards_dir = tmp_path / "cards"
    cards_dir.mkdir()

    missing_file = tmp_path / "nowhere" / "mapper.pt"

    card = {
        "name": "my_trained_mapper",
        "model_family": "speechmapper",
        "model_arch": "tiny",
        "checkpoint": str(missing_file),
    }

    (cards_dir / "mine.yaml").write_text(yaml.safe_dump(card), encoding="utf-8")

    result = run_cli("speechmapper", "model-info", "my_trained_mapper", cache_dir=tmp_path)

    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert str(missing_file) in result.stderr
    assert "Traceback" not in result.stderr


def test_model_info_prints_a_mapper_setup(cache_dir: Path) -> None:
    result = run_cli("speechmapper", "model-info", "speechmapper_tiny", cache_dir=cache_dir)

    assert result.returncode == 0, result.stderr
    assert "parameters:           427,008" in result.stdout
    assert "downsampling:         8x" in result.stdout
    assert "speech_encoder:" in result.stdout and "speechmapper_tiny_wav2vec2" in result.stdout


def test_broken_extension_fails_loudly(cache_dir: Path) -> None:
    # The entry point's registration raising is what a broken install looks
    # like; fairseq2 alone would only log a warning and carry on.
    code = (
        "import fairseq2_speechmapper.extension as extension\n"
        "def broken(container): raise ImportError('No module named missing_dependency')\n"
        "extension._register = broken\n"
        "from fairseq2_speechmapper.cli import main\n"
        "main(['assets', 'list'])\n"
    )

    env = {**os.environ, "FAIRSEQ2_SPEECHMAPPER_CACHE_DIR": str(cache_dir)}

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)

    assert result.returncode == 1
    assert "extension failed to register" in result.stderr
    assert "missing_dependency" in result.stderr


def test_self_check_passes(tmp_path: Path) -> None:
    result = run_cli("speechmapper", "self-check", cache_dir=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Self-check passed" in result.stdout
    assert (tmp_path / "cards" / "tiny.yaml").exists()
