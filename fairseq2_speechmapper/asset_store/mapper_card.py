"""The asset card of a trained mapper: it names the mapper's checkpoint and
the set-up it was trained for (speech encoder, layer, LLM, pad token id), so that later
stages load it by name and can check that they attach it to the right LLM."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

import torch

from fairseq2.assets import AssetCard
from fairseq2.data.tokenizers import Tokenizer
from fairseq2.data_type import DataType
from fairseq2.logging import log

from fairseq2_speechmapper.asset_store.card_files import write_card_file
from fairseq2_speechmapper.asset_store.paths import default_mapper_card_name as default_mapper_card_name
from fairseq2_speechmapper.asset_store.paths import get_cache_cards_dir
from fairseq2_speechmapper.errors import SpeechMapperError
from fairseq2_speechmapper.features.config import SpeechEncoderSection
from fairseq2_speechmapper.models.speechmapper import SPEECHMAPPER_FAMILY
from fairseq2_speechmapper.stage1.pad_token import resolve_pad_idx

if TYPE_CHECKING:
    # fairseq2.trainer imported first runs into a circular import.
    from fairseq2.trainer import TrainStepHook, TrainStepHookArgs

_MODEL_FIELDS: Final = ("base", "model_arch", "model_config")

# Written per checkpoint, or by fairseq2; not part of the set-up.
_BOOKKEEPING_FIELDS: Final = ("name", "model_family", "checkpoint", "trained_steps", "pad_token")


class MapperCardError(SpeechMapperError):
    pass


@final
@dataclass(kw_only=True)
class MapperCard:
    """What a trained mapper's card records; :meth:`write` writes it into the
    cache card directory, :meth:`read` reads it back from an asset card."""

    name: str

    speech_encoder: str
    """The speech encoder card whose features the mapper reads."""

    speech_encoder_layer: int | None
    """The speech encoder layer (1-based) the features come from; ``None`` for the last."""

    speech_encoder_options: dict[str, object] = field(default_factory=dict)

    llm: str
    """The LLM card whose embedding table the mapper was trained against."""

    pad_token_id: int | None = None
    """The id of the token whose embedding padded the targets; ``None`` (the
    paper's cards) for the LLM tokenizer's pad token."""

    model_fields: dict[str, object] = field(default_factory=dict)
    """``model_arch`` and ``model_config``, or ``base`` (the card trained from)."""

    extra_fields: dict[str, object] = field(default_factory=dict)
    """What later stages add, e.g. the instruction-tuning task and prompt format."""

    @staticmethod
    def read(card: AssetCard) -> MapperCard:
        metadata = {k: v for k, v in card.metadata.items() if not k.startswith("__")}

        for name in ("speech_encoder", "llm"):
            if not isinstance(metadata.get(name), str):
                raise MapperCardError(
                    f"The `{card.name}` card has no `{name}` field; it is not a trained mapper's card."
                )

        layer = metadata.pop("speech_encoder_layer", None)
        options = metadata.pop("speech_encoder_options", None)
        pad_token_id = metadata.pop("pad_token_id", None)

        return MapperCard(
            name=card.name,
            speech_encoder=str(metadata.pop("speech_encoder")),
            speech_encoder_layer=layer if isinstance(layer, int) else None,
            speech_encoder_options=dict(options) if isinstance(options, dict) else {},
            llm=str(metadata.pop("llm")),
            pad_token_id=pad_token_id if isinstance(pad_token_id, int) else None,
            model_fields={k: metadata.pop(k) for k in _MODEL_FIELDS if k in metadata},
            extra_fields={k: v for k, v in metadata.items() if k not in _BOOKKEEPING_FIELDS},
        )

    @property
    def card_file(self) -> Path:
        return get_cache_cards_dir() / f"{self.name}.yaml"

    def to_metadata(self, checkpoint: Path, trained_steps: int) -> dict[str, object]:
        return {
            "name": self.name,
            "model_family": SPEECHMAPPER_FAMILY,
            **self.model_fields,
            "checkpoint": str(checkpoint),
            "speech_encoder": self.speech_encoder,
            "speech_encoder_layer": self.speech_encoder_layer,
            "speech_encoder_options": self.speech_encoder_options,
            "llm": self.llm,
            "pad_token_id": self.pad_token_id,
            **self.extra_fields,
            "trained_steps": trained_steps,
        }

    def write(self, checkpoint: Path, trained_steps: int) -> Path:
        """Writes (or rewrites) the card into the cache card directory."""
        write_card_file(self.card_file, [self.to_metadata(checkpoint, trained_steps)])

        return self.card_file

    def checkpoint_hook(self, checkpoint_dir: Path) -> TrainStepHook:
        """A trainer checkpoint hook that points the card at each new checkpoint."""

        def write(args: TrainStepHookArgs) -> None:
            card_file = self.write(checkpoint_dir / f"step_{args.step_nr}" / "model", args.step_nr)

            log.info("Mapper card `{}` written to {} (step {}).", self.name, card_file, args.step_nr)

        return write

    def pad_idx(self, tokenizer: Tokenizer, *, llm_name: str | None = None) -> int:
        """The recorded pad token id, else the LLM tokenizer's pad token."""
        if self.pad_token_id is not None:
            return self.pad_token_id

        return resolve_pad_idx(tokenizer, None, llm_name=llm_name or self.llm)

    def speech_encoder_section(self, dtype: DataType = torch.float32) -> SpeechEncoderSection:
        """The speech encoder the card names, computing in ``dtype``."""
        return SpeechEncoderSection(
            name=self.speech_encoder,
            layer=self.speech_encoder_layer,
            dtype=dtype,
            whisper_window=self.speech_encoder_options.get("whisper_window", "30s"),  # type: ignore[arg-type]
        )
