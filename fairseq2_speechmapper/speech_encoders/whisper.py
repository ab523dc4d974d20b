"""Whisper's encoder (a Hugging Face transformers model, e.g. loaded through
fairseq2's ``hg`` model family) as a :class:`SpeechEncoder`.

Whisper only encodes fixed 30 s windows (3000 log-mel frames, 1500 encoder
frames). Padding convention: the *audio* is padded with zeros to 30 s, as
transformers' ``WhisperFeatureExtractor`` and openai-whisper do (faster-whisper
pads the log-mel instead, which changes every output frame).

Lengths: a waveform of ``S`` samples gives ``ceil(S / 160) + 2`` prepared mel
frames (the frames of the audio plus the two whose STFT windows still reach its
end) and ``ceil(S / 320)`` features at 50 Hz: the encoder frames whose 20 ms
hop starts inside the audio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, final

import torch
from torch import Tensor
from torch.nn.functional import dropout, gelu

from fairseq2.nn import BatchLayout

from fairseq2_speechmapper.models.padding import zero_padding
from fairseq2_speechmapper.speech_encoders.base import SpeechEncoder, check_waveform

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

WhisperWindow = Literal["30s", "utterance"]

# Whisper's log-mel: log10(max(mel, 1e-10)), floored at (max - 8), then
# (x + 4) / 4 (``WhisperFeatureExtractor._torch_extract_fbank_features``).
_LOG_MEL_FLOOR: Final = -10.0
_LOG_MEL_DYNAMIC_RANGE: Final = 8.0


def _normalize_log_mel(log_mel: Tensor) -> Tensor:
    return (log_mel + 4.0) / 4.0


def _denormalize_log_mel(log_mel: Tensor) -> Tensor:
    return log_mel * 4.0 - 4.0


@final
class WhisperSpeechEncoder(SpeechEncoder):
    """Whisper: log-mel frames of the audio zero-padded to 30 s in, the hidden
    states of one encoder layer at 50 Hz out.

    Layer ``k`` equals transformers' ``hidden_states[k]``: the output of the
    ``k``-th layer, with the final layer norm applied for the last layer only
    (its output is ``last_hidden_state``). Only the first ``k`` layers run.
    """

    def __init__(
        self,
        encoder: WhisperEncoder,
        layer: int,
        *,
        window: WhisperWindow = "30s",
        feature_extractor: WhisperFeatureExtractor | None = None,
    ) -> None:
        """
        :param encoder: The encoder of a transformers ``WhisperModel``.
        :param layer: The (1-based) layer whose output is returned.
        :param window: ``30s``: every utterance in Whisper's 30 s window, as it
            was trained; ``utterance``: in a window as long as the utterance
            (attention masked to it), far cheaper for short utterances.
        :param feature_extractor: The log-mel frontend; by default transformers'
            ``WhisperFeatureExtractor`` with the encoder's number of mel bins.
        """
        super().__init__()

        from transformers import WhisperFeatureExtractor

        num_layers = len(encoder.layers)

        if not 1 <= layer <= num_layers:
            raise ValueError(
                f"The speech encoder has {num_layers} layers, so the feature layer must be between 1 and {num_layers}, but is {layer} instead."
            )

        num_mel_bins = encoder.config.num_mel_bins

        if feature_extractor is None:
            feature_extractor = WhisperFeatureExtractor(feature_size=num_mel_bins)
        elif feature_extractor.feature_size != num_mel_bins:
            raise ValueError(
                f"The Whisper encoder takes {num_mel_bins} mel bins, but the feature extractor computes {feature_extractor.feature_size}."
            )

        stride = encoder.conv1.stride[0] * encoder.conv2.stride[0]

        num_window_frames = encoder.config.max_source_positions * stride

        if feature_extractor.nb_max_frames != num_window_frames:
            raise ValueError(
                f"The Whisper encoder takes windows of {num_window_frames} mel frames, but the feature extractor makes {feature_extractor.nb_max_frames}."
            )

        if window not in ("30s", "utterance"):
            raise ValueError(f"The Whisper window must be `30s` or `utterance`, but is `{window}`.")

        self.encoder = encoder
        self.layer = layer
        self.window = window
        self.output_dim = encoder.config.d_model
        self.feature_extractor = feature_extractor

        self._stride = stride
        self._num_window_frames = num_window_frames

        # Frames past ceil(S / hop) whose centred STFT windows (n_fft / 2
        # samples either side) can still reach the audio.
        self._num_tail_frames = -(-(feature_extractor.n_fft // 2) // feature_extractor.hop_length)

    @property
    def max_num_samples(self) -> int:
        """The longest waveform that fits in Whisper's 30 s window."""
        return int(self.feature_extractor.n_samples)

    def prepare_input(self, waveform: Tensor, sample_rate: int) -> Tensor:
        """Returns the log-mel frames ``(ceil(S / 160) + 2, C)`` of the audio,
        computed by transformers on the waveform zero-padded to 30 s."""
        check_waveform(waveform, sample_rate)

        num_samples = waveform.size(0)

        if num_samples == 0:
            raise ValueError("The waveform is empty, but Whisper needs at least one sample.")

        if num_samples > self.max_num_samples:
            raise ValueError(
                f"Whisper's encoder takes at most 30 s of audio ({self.max_num_samples} samples), but the waveform has {num_samples} samples ({num_samples / sample_rate:.2f} s); split it first."
            )

        # transformers pads the audio to 30 s itself, as Whisper was trained.
        log_mel = self.feature_extractor(
            waveform.detach().float().cpu().numpy(), sampling_rate=sample_rate, return_tensors="pt"
        ).input_features[0]

        num_frames = -(-num_samples // self.feature_extractor.hop_length) + self._num_tail_frames

        # (C, W) -> (W, C)
        log_mel = log_mel[:, :num_frames].T.contiguous()

        # Tail frames past the 30 s window (the last 20 ms of a full window)
        # only keep the length rule exact; `forward` never reads them.
        if log_mel.size(0) < num_frames:
            log_mel = torch.nn.functional.pad(log_mel, (0, 0, 0, num_frames - log_mel.size(0)))

        return log_mel

    def forward(self, inputs: Tensor, inputs_layout: BatchLayout) -> tuple[Tensor, BatchLayout]:
        """Encodes a right-padded batch of :meth:`prepare_input` outputs, each
        in its own window (see ``window``), whatever the batch padding."""
        num_mel_bins = self.encoder.config.num_mel_bins

        if inputs.dim() != 3 or inputs.size(-1) != num_mel_bins:
            raise ValueError(
                f"The Whisper encoder expects log-mel frames of shape (N, S, {num_mel_bins}), but `inputs` has shape {tuple(inputs.shape)}."
            )

        num_window_frames = self._num_window_frames

        feature_lens = []

        for num_frames in inputs_layout.seq_lens:
            num_real_frames = num_frames - self._num_tail_frames

            if not 0 < num_real_frames <= num_window_frames:
                raise ValueError(
                    f"A prepared Whisper input must have between {self._num_tail_frames + 1} and {num_window_frames + self._num_tail_frames} log-mel frames (at most 30 s of audio, from `prepare_input`), but has {num_frames}."
                )

            feature_lens.append(-(-num_real_frames // self._stride))

        if self.window == "30s":
            seqs, attn_mask = self._embed_30s_windows(inputs, inputs_layout), None
        else:
            seqs, attn_mask = self._embed_utterance_windows(inputs, feature_lens)

        encoder = self.encoder

        seqs = dropout(seqs, p=encoder.dropout, training=encoder.training)

        for layer in encoder.layers[: self.layer]:
            seqs = layer(seqs, attn_mask, layer_head_mask=None)[0]

        # transformers' last hidden state is normalised, the others are not.
        if self.layer == len(encoder.layers):
            seqs = encoder.layer_norm(seqs)

        seqs = seqs[:, : max(feature_lens)]

        seqs_layout = BatchLayout(tuple(seqs.shape[:2]), feature_lens, device=seqs.device)

        return zero_padding(seqs, seqs_layout), seqs_layout

    def _embed_30s_windows(self, inputs: Tensor, inputs_layout: BatchLayout) -> Tensor:
        num_window_frames = self._num_window_frames

        log_mel = inputs[:, :num_window_frames].float()

        if log_mel.size(1) < num_window_frames:
            log_mel = torch.nn.functional.pad(log_mel, (0, 0, 0, num_window_frames - log_mel.size(1)))

        window_lens = torch.tensor(inputs_layout.seq_lens, device=inputs.device).clamp(max=num_window_frames)

        # (W) -> (N, W, 1)
        audio_mask = (torch.arange(num_window_frames, device=inputs.device) < window_lens.unsqueeze(1)).unsqueeze(2)

        # The frames of the zero padding hold Whisper's floor, max(-10, max - 8)
        # normalised, and the audio's frames hold the max: rebuild them exactly
        # rather than ship 3000 frames per utterance through the pipeline.
        max_log_mel = _denormalize_log_mel(log_mel.masked_fill(~audio_mask, -torch.inf).amax(dim=(1, 2)))

        pad_value = _normalize_log_mel((max_log_mel - _LOG_MEL_DYNAMIC_RANGE).clamp(min=_LOG_MEL_FLOOR))

        log_mel = torch.where(audio_mask, log_mel, pad_value[:, None, None])

        encoder = self.encoder

        # (N, W, C) -> (N, C, W)
        seqs = log_mel.transpose(1, 2).to(encoder.conv1.weight.dtype)

        seqs = gelu(encoder.conv1(seqs))
        seqs = gelu(encoder.conv2(seqs))

        # (N, M, S) -> (N, S, M)
        seqs = seqs.transpose(1, 2) + encoder.embed_positions.weight

        return seqs

    def _embed_utterance_windows(self, inputs: Tensor, feature_lens: list[int]) -> tuple[Tensor, Tensor]:
        """Each utterance in a window of its own length: frames past it are
        zeroed before each convolution, as the convolutions' zero padding does
        for an utterance alone, and masked out of attention."""
        encoder = self.encoder

        num_frames = max(feature_lens) * self._stride

        mel_lens = torch.tensor([n * self._stride for n in feature_lens], device=inputs.device)

        log_mel = inputs[:, :num_frames].float()

        if log_mel.size(1) < num_frames:
            log_mel = torch.nn.functional.pad(log_mel, (0, 0, 0, num_frames - log_mel.size(1)))

        # (N, W, 1)
        mel_mask = (torch.arange(num_frames, device=inputs.device) < mel_lens.unsqueeze(1)).unsqueeze(2)

        # (N, W, C) -> (N, C, W)
        seqs = (log_mel * mel_mask).transpose(1, 2).to(encoder.conv1.weight.dtype)

        seqs = gelu(encoder.conv1(seqs)) * mel_mask.transpose(1, 2)
        seqs = gelu(encoder.conv2(seqs))

        num_features = seqs.size(2)

        # (N, M, S) -> (N, S, M)
        seqs = seqs.transpose(1, 2) + encoder.embed_positions.weight[:num_features]

        key_mask = torch.arange(num_features, device=inputs.device) < torch.tensor(
            feature_lens, device=inputs.device
        ).unsqueeze(1)

        # Additive (N, 1, S, S) mask: no query attends to another utterance's padding.
        attn_mask = torch.zeros((seqs.size(0), 1, num_features, num_features), dtype=seqs.dtype, device=seqs.device)
        attn_mask.masked_fill_(~key_mask[:, None, None, :], torch.finfo(seqs.dtype).min)

        return seqs, attn_mask
