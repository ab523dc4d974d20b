"""A bad config value stops a recipe with fairseq2's validation error (exit 2,
one line naming the field) before anything loads: every case also points a
card at one that does not exist, which would fail differently if reached."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairseq2.utils.validation import StandardObjectValidator, ValidationError

from fairseq2_speechmapper.features import SpeechEncoderSection
from fairseq2_speechmapper.models.speechmapper import SpeechMapperBlockConfig, SpeechMapperConfig
from fairseq2_speechmapper.recipes.pretrain.config import PretrainConfig

_NO_CARD = "no_such_card_anywhere"

CASES = [
    ("pretrain", "paper", [f"llm.name={_NO_CARD}", f"speech_encoder.name={_NO_CARD}", "loss.alpha=11"], "`alpha`"),
    ("pretrain", "paper", [f"llm.name={_NO_CARD}", "speech_encoder.layer=0"], "`layer`"),
    ("instruct", "paper_asr", [f"model.name={_NO_CARD}", "loss.sigma=1.5"], "`sigma`"),
    ("evaluate", "paper_asr", [f"model.name={_NO_CARD}", "scoring.comet_batch_size=0"], "`comet_batch_size`"),
]


@pytest.mark.parametrize(("command", "preset", "overrides", "field"), CASES, ids=[c[3].strip("`") for c in CASES])
def test_bad_value_stops_the_recipe_before_anything_loads(
    tmp_path: Path, cache_dir: Path, command: str, preset: str, overrides: list[str], field: str
) -> None:
    fairseq2 = Path(sys.executable).parent / "fairseq2"

    # Wide enough that fairseq2's log line is not wrapped.
    env = {**os.environ, "FAIRSEQ2_SPEECHMAPPER_CACHE_DIR": str(cache_dir), "COLUMNS": "400"}

    start = time.perf_counter()

    result = subprocess.run(
        [str(fairseq2), "speechmapper", command, str(tmp_path / "out"), "--preset", preset, "--config", *overrides],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )

    seconds = time.perf_counter() - start

    output = result.stdout + result.stderr

    assert result.returncode == 2, output

    errors = [line for line in output.splitlines() if "ERROR" in line]

    assert len(errors) == 1, output
    assert field in errors[0] and "is not valid" in errors[0], output

    assert _NO_CARD not in output
    assert "Traceback" not in output

    # Imports only (the machine may be busy); loading any model takes longer.
    assert seconds < 120


def test_mapper_config_is_validated() -> None:
    validator = StandardObjectValidator()

    config = SpeechMapperConfig(frame_average=0, blocks=[SpeechMapperBlockConfig(model_dim=30, output_dim=8)])

    with pytest.raises(ValidationError, match="frame_average") as info:
        validator.validate(config)

    assert "num_attn_heads" in str(info.value)

    with pytest.raises(ValidationError, match="blocks"):
        validator.validate(SpeechMapperConfig(blocks=[]))

    with pytest.raises(ValidationError, match="layer"):
        validator.validate(SpeechEncoderSection(layer=0))


def test_warmup_as_long_as_the_run_is_refused() -> None:
    validator = StandardObjectValidator()

    config = PretrainConfig()

    config.regime.num_steps = 100_000

    validator.validate(config.lr_scheduler)  # fairseq2's own check lets it through

    with pytest.raises(
        ValidationError, match=r"`lr_scheduler.config.num_warmup_steps` equals `regime.num_steps` \(100000\)"
    ):
        validator.validate(config)

    # Shorter or longer than the run (a quick try of the paper's preset) is fine.
    for num_steps in (3, 100_001):
        config.regime.num_steps = num_steps

        validator.validate(config)
