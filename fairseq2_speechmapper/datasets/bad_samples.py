"""Bad utterances in the reader: collated batches skip and count them, or
stand in for the batch (:class:`BadSamples`) so the reader raises them on the
main thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import final

import torch
from torch import Tensor

from fairseq2.logging import log
from fairseq2.nn.utils.padding import pad_seqs

from fairseq2_speechmapper.datasets.batch import SpeechBatch, parse_fields
from fairseq2_speechmapper.datasets.manifest import OnBadSample
from fairseq2_speechmapper.datasets.text import TextNormalizer

TextEncoder = Callable[[str], Tensor]

STOP_KEY = "stop"
"""Set in an example whose ``error`` stops the run even with
``on_bad_sample="skip"`` (a damaged feature cache is not bad input)."""


@final
@dataclass(kw_only=True)
class BadSamples:
    """Stands in the data pipeline for a batch that met bad utterances when
    they are errors: the reader raises them on the main thread."""

    examples: list[dict[str, object]]
    """The batch's examples as loaded, the bad ones with their ``error``."""

    @property
    def messages(self) -> list[str]:
        """One line per bad utterance, naming its manifest line and file."""
        return [str(e["error"]) for e in self.examples if "error" in e]


def bad_line_example(source: str, message: str) -> dict[str, object]:
    """A reader example for a manifest line that is bad as written."""
    return {
        "id": source,
        "audio_path": "",
        "offset": 0.0,
        "duration": 0.0,
        "text": "",
        "source": source,
        "fields": "{}",
        "error": message,
    }


def collate_speech_batch(
    examples: list[dict[str, object]],
    normalize_text: TextNormalizer,
    encode_text: TextEncoder,
    *,
    on_bad_sample: OnBadSample = "skip",
) -> SpeechBatch | BadSamples | None:
    """Pads the prepared inputs of ``examples``. Bad utterances are skipped,
    logged and counted, or, with ``on_bad_sample="error"`` (or one that must
    stop, see :data:`STOP_KEY`), returned as :class:`BadSamples`. Returns
    ``None`` if no utterance is left."""
    good_examples, messages = [], []

    for example in examples:
        error = example.get("error")
        if error is None:
            good_examples.append(example)
        else:
            messages.append(str(error))

    if messages and (on_bad_sample == "error" or any(STOP_KEY in e for e in examples)):
        return BadSamples(examples=examples)

    for message in messages:
        log.warning("Skipping bad utterance. {}", message)

    if not good_examples:
        return None

    inputs: list[Tensor] = [e["inputs"] for e in good_examples]  # type: ignore[misc]

    padded_inputs, _ = pad_seqs(inputs)

    raw_texts = [str(e["text"]) for e in good_examples]

    texts = [normalize_text(t) for t in raw_texts]

    return SpeechBatch(
        inputs=padded_inputs,
        input_lens=[int(x.size(0)) for x in inputs],
        texts=texts,
        raw_texts=raw_texts,
        target_ids=[encode_text(t).to(torch.int64) if t else torch.empty(0, dtype=torch.int64) for t in texts],
        ids=[str(e["id"]) for e in good_examples],
        sources=[str(e["source"]) for e in good_examples],
        fields=[parse_fields(str(e["fields"])) for e in good_examples],
        num_bad_samples=len(messages),
    )


@final
class SpeechBatchCollater:
    """Collates each batch of a pass in order (see :func:`collate_speech_batch`);
    the bad utterances of a batch that has no good one are counted in the
    next batch."""

    def __init__(self, normalize_text: TextNormalizer, encode_text: TextEncoder, on_bad_sample: OnBadSample) -> None:
        self._normalize_text = normalize_text
        self._encode_text = encode_text
        self._on_bad_sample = on_bad_sample
        self._num_unreported_bad_samples = 0

    def __call__(self, examples: list[dict[str, object]]) -> SpeechBatch | BadSamples | None:
        batch = collate_speech_batch(
            examples, self._normalize_text, self._encode_text, on_bad_sample=self._on_bad_sample
        )

        if batch is None:
            self._num_unreported_bad_samples += len(examples)
        elif isinstance(batch, SpeechBatch):
            batch.num_bad_samples += self._num_unreported_bad_samples

            self._num_unreported_bad_samples = 0

        return batch
