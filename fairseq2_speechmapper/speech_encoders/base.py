from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor
from torch.nn import Module

from fairseq2.models.transformer import AttentionBiasCache, TransformerEncoder
from fairseq2.nn import BatchLayout


class SpeechEncoder(Module, ABC):
    """A frozen speech foundation model with its own input frontend: waveforms
    in, the hidden states of one layer out.

    The frontend runs per utterance (:meth:`prepare_input`, e.g. in data
    pipeline workers) so that padding a batch can never change its result.
    """

    output_dim: int
    """The width of the returned features."""

    layer: int
    """The (1-based) encoder layer whose output is returned."""

    @abstractmethod
    def prepare_input(self, waveform: Tensor, sample_rate: int) -> Tensor:
        """Turns one 16 kHz mono waveform ``(S,)`` in [-1, 1] into the
        encoder's input (e.g. a raw waveform or fbank frames ``(F, C)``)."""

    @abstractmethod
    def forward(self, inputs: Tensor, inputs_layout: BatchLayout) -> tuple[Tensor, BatchLayout]:
        """Encodes a right-padded batch of prepared inputs.

        :returns: The features of :attr:`layer`, *Shape:* :math:`(N,S,M)`, and
            their layout; padded positions are zero.
        """


def run_encoder_layers(encoder: TransformerEncoder, seqs: Tensor, seqs_layout: BatchLayout, num_layers: int) -> Tensor:
    """Runs the first ``num_layers`` layers of ``encoder`` only: fairseq2 0.8.1's
    layer hooks cannot stop the stack early, and later layers are wasted work."""
    layers = encoder.layers  # type: ignore[attr-defined]

    if not 1 <= num_layers <= len(layers):
        raise ValueError(
            f"The speech encoder has {len(layers)} layers, so the feature layer must be between 1 and {len(layers)}, but is {num_layers} instead."
        )

    attn_bias_cache = AttentionBiasCache()

    for layer in layers[:num_layers]:
        seqs = layer(seqs, seqs_layout, attn_bias_cache)

    return seqs


def check_waveform(waveform: Tensor, sample_rate: int) -> None:
    """Checks that ``waveform`` is what every frontend expects: 16 kHz mono."""
    if sample_rate != 16_000:
        raise ValueError(
            f"The speech encoder expects 16 kHz audio, but the waveform is sampled at {sample_rate} Hz. Resample it first."
        )

    if waveform.dim() != 1:
        raise ValueError(
            f"The speech encoder expects a mono waveform of shape (S,), but its shape is {tuple(waveform.shape)}."
        )
