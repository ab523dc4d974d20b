"""Builds the demo assets once: the converted SmolLM2 and Whisper tiny.en, the
spoken demo corpus, and the cards of both models and of the corpus, each
part at most once (:mod:`~fairseq2_speechmapper.demo.parts`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

from fairseq2_speechmapper.asset_store.card_files import write_card_file
from fairseq2_speechmapper.asset_store.paths import get_cache_dir
from fairseq2_speechmapper.datasets.speech import SPEECH_MANIFEST_FAMILY
from fairseq2_speechmapper.demo.errors import DemoAssetError
from fairseq2_speechmapper.demo.parts import PartReport, build_part, read_stamp

CARD_FILE_NAME: Final = "demo.yaml"

# The part directories under ``demo/``.
_PARTS: Final = ("smollm2", "whisper_hub", "corpus")

DEMO_CORPUS_CARD: Final = "speechmapper_demo_corpus"
"""The dataset card of the demo corpus (``train`` and ``dev`` splits)."""


@final
@dataclass(kw_only=True)
class DemoAssets:
    """Where :func:`make_demo_assets` put its files."""

    root_dir: Path
    card_file: Path
    smollm2_model_dir: Path
    smollm2_tokenizer_dir: Path
    whisper_hub_cache_dir: Path
    """Use as ``HF_HUB_CACHE`` (with ``HF_HUB_OFFLINE=1``) to load the Whisper card."""

    whisper_snapshot_dir: Path
    corpus_dir: Path
    train_manifest: Path
    dev_manifest: Path
    cards: list[dict[str, object]]
    reports: list[PartReport]

    @property
    def hf_env(self) -> dict[str, str]:
        """The environment under which fairseq2's ``hg`` family finds the
        converted Whisper offline; it must be set before ``huggingface_hub`` is
        imported."""
        return {"HF_HUB_CACHE": str(self.whisper_hub_cache_dir), "HF_HUB_OFFLINE": "1"}


def ensure_demo_assets() -> DemoAssets:
    """Returns the demo assets in the cache directory, with the large corpus
    that the demo presets train and evaluate on, building what is missing
    (minutes on the first call, instant afterwards)."""
    from fairseq2_speechmapper.demo.large_corpus import build_large_corpus

    assets = make_demo_assets(get_cache_dir())

    assets.reports.append(build_large_corpus(get_cache_dir(), cards_dir=assets.card_file.parent)[1])

    return assets


def wait_for_demo_assets(timeout_seconds: float = 1800.0) -> None:
    """Waits until another process (rank 0 of a distributed job) has built the
    demo assets in the cache directory."""
    root_dir = get_cache_dir().expanduser().resolve() / "demo"

    card_file = get_cache_dir().expanduser().resolve() / "cards" / CARD_FILE_NAME

    deadline = time.monotonic() + timeout_seconds

    while not (card_file.exists() and all(read_stamp(root_dir / part) for part in (*_PARTS, "large_corpus"))):
        if time.monotonic() > deadline:
            raise DemoAssetError(
                f"The demo assets in {root_dir} were not built within {timeout_seconds:.0f} s; run `fairseq2 speechmapper make-demo-assets` first."
            )

        time.sleep(2.0)


def make_demo_assets(output_dir: Path, *, cards_dir: Path | None = None) -> DemoAssets:
    """Writes the demo assets into ``output_dir/demo`` and their cards into
    ``cards_dir/demo.yaml`` (default ``output_dir/cards``, the directory that
    :func:`~fairseq2_speechmapper.asset_store.paths.get_cache_cards_dir` names for the
    default ``output_dir``); parts already built are skipped.

    :raises DemoAssetError: A source package, file or tool is missing or broken.
    """
    from fairseq2_speechmapper.demo.corpus import write_corpus
    from fairseq2_speechmapper.demo.smollm2 import convert_smollm2, locate_smollm2_gguf, smollm2_card
    from fairseq2_speechmapper.demo.whisper import (
        WhisperConversion,
        convert_whisper,
        locate_whisper_ct2,
        whisper_card,
    )

    root_dir = output_dir.expanduser().resolve() / "demo"

    if cards_dir is None:
        cards_dir = output_dir.expanduser().resolve() / "cards"

    reports = []

    def build_smollm2(part_dir: Path) -> tuple[str, dict[str, object]]:
        conversion = convert_smollm2(locate_smollm2_gguf(), part_dir)

        details = f"{conversion.num_parameters / 1e6:.1f}M parameters fp32; tokenizer: {conversion.tokenizer_report}"

        # The card is written with the final paths, not those of the tmp dir.
        conversion.model_dir = root_dir / "smollm2" / "model"
        conversion.tokenizer_dir = root_dir / "smollm2" / "tokenizer"

        return details, smollm2_card(conversion)

    reports.append(build_part(root_dir / "smollm2", build_smollm2))

    def build_whisper(part_dir: Path) -> tuple[str, dict[str, object]]:
        conversion = convert_whisper(locate_whisper_ct2(), part_dir)

        final_dir = root_dir / "whisper_hub"

        final_conversion = WhisperConversion(
            hub_cache_dir=final_dir,
            snapshot_dir=final_dir / conversion.snapshot_dir.relative_to(part_dir),
            num_parameters=conversion.num_parameters,
        )

        details = f"{conversion.num_parameters / 1e6:.1f}M parameters fp32 (encoder and decoder)"

        return details, whisper_card(final_conversion)

    reports.append(build_part(root_dir / "whisper_hub", build_whisper))

    def build_corpus(part_dir: Path) -> tuple[str, dict[str, object]]:
        summary = write_corpus(part_dir)

        details = ", ".join(
            f"{split} {summary.num_utterances[split]} utterances / {summary.minutes[split]:.1f} min"
            for split in ("train", "dev")
        )
        details += f"; {len(summary.voices)} voices"

        return details, {}

    reports.append(build_part(root_dir / "corpus", build_corpus))

    smollm2_card_dict: dict[str, object] = read_stamp(root_dir / "smollm2")["card"]  # type: ignore[assignment]
    whisper_card_dict: dict[str, object] = read_stamp(root_dir / "whisper_hub")["card"]  # type: ignore[assignment]

    cards = [smollm2_card_dict, whisper_card_dict, _corpus_card(root_dir / "corpus")]

    card_file = cards_dir / CARD_FILE_NAME

    write_card_file(card_file, cards)

    whisper_hub_cache_dir = root_dir / "whisper_hub"

    return DemoAssets(
        root_dir=root_dir,
        card_file=card_file,
        smollm2_model_dir=root_dir / "smollm2" / "model",
        smollm2_tokenizer_dir=root_dir / "smollm2" / "tokenizer",
        whisper_hub_cache_dir=whisper_hub_cache_dir,
        whisper_snapshot_dir=Path(str(whisper_card_dict["checkpoint"])),
        corpus_dir=root_dir / "corpus",
        train_manifest=root_dir / "corpus" / "train.jsonl",
        dev_manifest=root_dir / "corpus" / "dev.jsonl",
        cards=cards,
        reports=reports,
    )


def _corpus_card(corpus_dir: Path) -> dict[str, object]:
    return {
        "name": DEMO_CORPUS_CARD,
        "dataset_family": SPEECH_MANIFEST_FAMILY,
        "dataset_config": {"manifest_dir": str(corpus_dir)},
    }
