from __future__ import annotations

from typing import final

from torch import Tensor

from fairseq2.nn import BatchLayout

from fairseq2_speechmapper.models.w2vbert2 import (
    W2VBert2Model,
    compute_w2vbert2_fbank,
    create_w2vbert2_fbank_converter,
)
from fairseq2_speechmapper.speech_encoders.base import SpeechEncoder


@final
class W2VBert2SpeechEncoder(SpeechEncoder):
    """w2v-BERT 2.0: SeamlessM4T's 80-dim fbank in, 50 Hz features out."""

    def __init__(self, model: W2VBert2Model, layer: int) -> None:
        super().__init__()

        self.model = model
        self.layer = layer
        self.output_dim = model.model_dim

        self._fbank_converter = create_w2vbert2_fbank_converter()

    def prepare_input(self, waveform: Tensor, sample_rate: int) -> Tensor:
        # Standardised per utterance, so before padding; the frontend checks
        # the sample rate and channels.
        return compute_w2vbert2_fbank(waveform.float(), sample_rate, converter=self._fbank_converter)

    def forward(self, inputs: Tensor, inputs_layout: BatchLayout) -> tuple[Tensor, BatchLayout]:
        return self.model(inputs, inputs_layout, layer=self.layer)
