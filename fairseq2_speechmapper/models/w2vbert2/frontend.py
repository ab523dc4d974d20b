from __future__ import annotations

from typing import Final

from torch import Tensor

from fairseq2.data.audio import WaveformToFbankConverter
from fairseq2.data_type import DataType
from fairseq2.device import Device

W2VBERT2_SAMPLE_RATE: Final = 16_000
"""The sample rate, in Hz, of the waveforms w2v-BERT 2.0 was trained on."""

W2VBERT2_NUM_FBANK_CHANNELS: Final = 80
"""The number of log-mel filterbank channels w2v-BERT 2.0 reads."""


def create_w2vbert2_fbank_converter(
    *, device: Device | None = None, dtype: DataType | None = None
) -> WaveformToFbankConverter:
    """Returns the converter from 16 kHz mono float waveforms in [-1, 1] to
    the 80-channel fbanks w2v-BERT 2.0 reads, as SeamlessM4T computes them:
    Kaldi fbanks (25 ms / 10 ms) of the waveform scaled to 16-bit integers,
    standardised per utterance and channel.

    The converter maps ``{"waveform": (S,) or (S, 1), "sample_rate": 16000}``
    to a dict whose ``"fbank"`` is :math:`(S_{frames},80)`, so it can be used in
    a data pipeline ``map``. Standardisation divides by each channel's standard
    deviation: an utterance with a constant channel (digital silence, a pure
    synthetic tone) gives NaN, as in SeamlessM4T's own pipeline.
    """
    return WaveformToFbankConverter(
        num_mel_bins=W2VBERT2_NUM_FBANK_CHANNELS,
        # Kaldi compliance: fbanks of 16-bit integer samples.
        waveform_scale=2**15,
        channel_last=True,
        standardize=True,
        device=device,
        dtype=dtype,
    )


def compute_w2vbert2_fbank(
    waveform: Tensor,
    sample_rate: int = W2VBERT2_SAMPLE_RATE,
    *,
    converter: WaveformToFbankConverter | None = None,
) -> Tensor:
    """Computes the w2v-BERT 2.0 fbanks of one utterance.

    :param waveform: The 16 kHz mono waveform in [-1, 1]. *Shape:* :math:`(S,)`
        or :math:`(S,1)`.
    :param converter: A converter from :func:`create_w2vbert2_fbank_converter`
        to reuse; a new one is made if ``None``.

    :returns: The fbanks. *Shape:* :math:`(S_{frames},80)` at 100 Hz (1 s of
        audio gives 98 frames).
    """
    if sample_rate != W2VBERT2_SAMPLE_RATE:
        raise ValueError(
            f"`sample_rate` must be {W2VBERT2_SAMPLE_RATE} (resample first), but is {sample_rate} instead."
        )

    # A (1, S) waveform would be read as S channels of one sample each.
    if waveform.ndim == 2 and waveform.size(1) == 1:
        waveform = waveform.squeeze(1)

    if waveform.ndim != 1:
        raise ValueError(
            f"`waveform` must be mono, of shape (S,) or (S, 1), but has shape {tuple(waveform.shape)} instead."
        )

    if converter is None:
        converter = create_w2vbert2_fbank_converter()

    output = converter({"waveform": waveform, "sample_rate": float(sample_rate)})

    fbank: Tensor = output["fbank"]

    return fbank
