from __future__ import annotations

import json
from dataclasses import dataclass
from typing import final

import torch
from torch import Tensor

from fairseq2.device import Device
from fairseq2.nn import BatchLayout


@final
@dataclass(kw_only=True)
class SpeechBatch:
    """A right-padded batch of speech encoder inputs with their transcripts."""

    inputs: Tensor
    """The prepared speech encoder inputs. *Shape:* :math:`(N,S,*)`."""

    input_lens: list[int]

    texts: list[str]
    """The normalised transcripts."""

    raw_texts: list[str]
    """The transcripts as the manifest writes them (case and all): COMET's
    source sentences."""

    target_ids: list[Tensor]
    """The transcripts as LLM token ids (no control symbols)."""

    ids: list[str]

    sources: list[str]
    """Each utterance's ``manifest:line``: unique, unlike ids."""

    fields: list[dict[str, object]]
    """Each manifest line's other fields (``translation``, ``question``, ...)."""

    num_bad_samples: int = 0
    """The bad utterances skipped while this batch was read."""

    def to(self, device: Device, *, non_blocking: bool = False) -> None:
        self.inputs = self.inputs.to(device, non_blocking=non_blocking)

    @property
    def inputs_layout(self) -> BatchLayout:
        return BatchLayout.of(self.inputs, self.input_lens)

    @property
    def num_examples(self) -> int:
        return len(self.ids)


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """Copies a host tensor of a batch to ``device`` without making the host
    wait for the accelerator: through pinned memory on CUDA (as fairseq2's
    ``to_tensor``), a plain copy elsewhere."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)

    return tensor.pin_memory().to(device, non_blocking=True)


def parse_fields(serialized_fields: str) -> dict[str, object]:
    fields = json.loads(serialized_fields)

    return fields if isinstance(fields, dict) else {}
