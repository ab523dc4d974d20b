from __future__ import annotations

from typing import final

from torch import Tensor
from torch.nn.functional import layer_norm

from fairseq2.models.wav2vec2 import Wav2Vec2Model
from fairseq2.nn import BatchLayout
from fairseq2.nn.utils.padding import pad_seqs

from fairseq2_speechmapper.models.padding import zero_padding
from fairseq2_speechmapper.speech_encoders.base import (
    SpeechEncoder,
    check_waveform,
    run_encoder_layers,
)


@final
class Wav2Vec2SpeechEncoder(SpeechEncoder):
    """fairseq2's ``wav2vec2`` family: raw 16 kHz waveform in, 50 Hz features."""

    def __init__(self, model: Wav2Vec2Model, layer: int, *, normalize_waveform: bool = False) -> None:
        super().__init__()

        self.model = model
        self.layer = layer
        self.output_dim = model.model_dim
        self.normalize_waveform = normalize_waveform

    def prepare_input(self, waveform: Tensor, sample_rate: int) -> Tensor:
        check_waveform(waveform, sample_rate)

        waveform = waveform.float()

        # Checkpoints fine-tuned with normalised audio (e.g. large-lv60) expect
        # it per utterance, before padding.
        if self.normalize_waveform:
            waveform = layer_norm(waveform, waveform.shape)

        return waveform

    def forward(self, inputs: Tensor, inputs_layout: BatchLayout) -> tuple[Tensor, BatchLayout]:
        frontend = self.model.encoder_frontend

        if inputs_layout.padded:
            # The convolutional feature extractor of wav2vec2 base normalises
            # over time (GroupNorm), so padding would leak into real frames:
            # extract per utterance, then batch the rest, which masks padding.
            features = []

            for inputs_row, seq_len in zip(inputs, inputs_layout.seq_lens):
                utterance = inputs_row[:seq_len].unsqueeze(0)

                utterance_features, _, _ = frontend.extract_features(utterance, BatchLayout.of(utterance))

                features.append(utterance_features.squeeze(0))

            seqs, seqs_layout = pad_seqs(features)
        else:
            seqs, seqs_layout, _ = frontend.extract_features(inputs, inputs_layout)

        seqs, _ = frontend.process_features(zero_padding(seqs, seqs_layout), seqs_layout)

        seqs = run_encoder_layers(self.model.encoder, seqs, seqs_layout, self.layer)

        return zero_padding(seqs, seqs_layout), seqs_layout
