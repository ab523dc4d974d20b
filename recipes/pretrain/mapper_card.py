"""The asset card of a trained mapper: it names the mapper's checkpoint and
the set-up it was trained for (SFM, layer, LLM, pad token), so that later
stages load it by name and can check that they attach it to the right LLM."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, final

from fairseq2.assets import AssetCard
from fairseq2.logging import log

from fairseq2_speechmapper.card_files import write_card_file
from fairseq2_speechmapper.models.speechmapper import SPEECHMAPPER_FAMILY
from fairseq2_speechmapper.paths import get_cache_cards_dir

if TYPE_CHECKING:
    # fairseq2.trainer imported first runs into a circular import.
    from fairseq2.trainer import TrainStepHookArgs


def default_mapper_card_name(output_dir: Path) -> str:
    return "speechmapper_" + re.sub(r"[^A-Za-z0-9_]+", "_", output_dir.resolve().name).strip("_").lower()


@final
@dataclass(kw_only=True)
class MapperCardWriter:
    """Writes (and rewrites, at every checkpoint) the card of the mapper being
    trained into the cache card directory, pointing at the latest checkpoint."""

    name: str
    checkpoint_dir: Path
    model_fields: dict[str, object]
    """``model_arch`` and ``model_config``, or ``base`` (the card trained from)."""

    speech_encoder: str
    speech_encoder_layer: int | None
    speech_encoder_options: dict[str, object]
    llm: str
    pad_token: str
    pad_token_id: int
    extra_fields: dict[str, object] = field(default_factory=dict)
    """What later stages add, e.g. the instruction-tuning task and prompt format."""

    @property
    def card_file(self) -> Path:
        return get_cache_cards_dir() / f"{self.name}.yaml"

    def card(self, step_nr: int) -> dict[str, object]:
        return {
            "name": self.name,
            "model_family": SPEECHMAPPER_FAMILY,
            **self.model_fields,
            "checkpoint": str(self.checkpoint_dir / f"step_{step_nr}" / "model"),
            "speech_encoder": self.speech_encoder,
            "speech_encoder_layer": self.speech_encoder_layer,
            "speech_encoder_options": self.speech_encoder_options,
            "llm": self.llm,
            "pad_token": self.pad_token,
            "pad_token_id": self.pad_token_id,
            **self.extra_fields,
            "trained_steps": step_nr,
        }

    def __call__(self, args: TrainStepHookArgs) -> None:
        write_card_file(self.card_file, [self.card(args.step_nr)])

        log.info("Mapper card `{}` written to {} (step {}).", self.name, self.card_file, args.step_nr)


class MapperCardError(Exception):
    pass


@final
@dataclass(kw_only=True)
class MapperCardInfo:
    """The set-up a trained mapper's card records."""

    name: str
    speech_encoder: str
    speech_encoder_layer: int | None
    speech_encoder_options: dict[str, object]
    llm: str
    pad_token: str | None
    metadata: dict[str, object]
    """All the card's fields (an instruction-tuned mapper's task and prompt format)."""


def read_mapper_card(card: AssetCard) -> MapperCardInfo:
    metadata = dict(card.metadata)

    for name in ("speech_encoder", "llm"):
        if not isinstance(metadata.get(name), str):
            raise MapperCardError(f"The `{card.name}` card has no `{name}` field; it is not a trained mapper's card.")

    layer = metadata.get("speech_encoder_layer")
    options = metadata.get("speech_encoder_options")
    pad_token = metadata.get("pad_token")

    return MapperCardInfo(
        name=card.name,
        speech_encoder=str(metadata["speech_encoder"]),
        speech_encoder_layer=layer if isinstance(layer, int) else None,
        speech_encoder_options=dict(options) if isinstance(options, dict) else {},
        llm=str(metadata["llm"]),
        pad_token=pad_token if isinstance(pad_token, str) else None,
        metadata=metadata,
    )
