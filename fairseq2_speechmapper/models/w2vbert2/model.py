from __future__ import annotations

from collections.abc import Iterator
from typing import final

from torch import Tensor
from torch.nn import Module

from fairseq2.models.transformer import AttentionBiasCache, StandardTransformerEncoder
from fairseq2.models.wav2vec2 import Wav2Vec2Frontend
from fairseq2.nn import BatchLayout

from fairseq2_speechmapper.models.padding import zero_padding


@final
class W2VBert2Model(Module):
    """Encodes log-mel filterbanks with w2v-BERT 2.0: stacks frames, projects
    them and runs the conformer layers (with Shaw relative position attention).

    Only the encoder of the released checkpoint: no masking, no quantizer, no
    pretraining heads. Padded positions never change real positions' outputs,
    and they are zero in every returned tensor.
    """

    def __init__(
        self,
        encoder_frontend: Wav2Vec2Frontend,
        encoder: StandardTransformerEncoder,
        *,
        num_fbank_channels: int,
        model_dim: int,
    ) -> None:
        super().__init__()

        # The layers are run one by one (see `_iter_outputs`); a final norm or
        # dropout of the stack would be silently skipped.
        if encoder.layer_norm is not None or encoder.dropout is not None:
            raise ValueError("`encoder` must have no final layer norm and no dropout.")

        self.encoder_frontend = encoder_frontend
        self.encoder = encoder
        self.num_fbank_channels = num_fbank_channels
        self.model_dim = model_dim

    @property
    def num_layers(self) -> int:
        """The number of conformer layers."""
        return len(self.encoder.layers)

    def forward(
        self, seqs: Tensor, seqs_layout: BatchLayout, *, layer: int | None = None
    ) -> tuple[Tensor, BatchLayout]:
        """
        :param seqs: The log-mel filterbanks (e.g. from
            :func:`compute_w2vbert2_fbank`). *Shape:* :math:`(N,S,C)`, 100 Hz.
        :param seqs_layout: The layout of ``seqs`` (right padding only).
        :param layer: The 1-based layer whose output to return; the layers
            above it are not run. ``0`` returns the projected features (the
            encoder input), ``None`` the last layer's output.

        :returns: The hidden states, *Shape:* :math:`(N,S/2,M)` at 50 Hz, zero
            at padded positions, and their layout.
        """
        layer = self._check_layer(layer)

        for layer_nr, (layer_seqs, layer_seqs_layout) in enumerate(self._iter_outputs(seqs, seqs_layout)):
            if layer_nr == layer:
                return layer_seqs, layer_seqs_layout

        raise AssertionError("unreachable: `_check_layer` bounds `layer`.")

    def layer_outputs(
        self, seqs: Tensor, seqs_layout: BatchLayout, *, max_layer: int | None = None
    ) -> tuple[list[Tensor], BatchLayout]:
        """Returns the encoder input and the outputs of layers 1 to
        ``max_layer`` (all layers if ``None``), in the order of transformers'
        ``output_hidden_states``, zero at padded positions, and their layout."""
        max_layer = self._check_layer(max_layer)

        outputs = []

        for layer_seqs, layer_seqs_layout in self._iter_outputs(seqs, seqs_layout):
            outputs.append(layer_seqs)

            if len(outputs) > max_layer:
                return outputs, layer_seqs_layout

        raise AssertionError("unreachable: `_check_layer` bounds `max_layer`.")

    def _check_layer(self, layer: int | None) -> int:
        if layer is None:
            return self.num_layers

        if not 0 <= layer <= self.num_layers:
            raise ValueError(
                f"`layer` must be between 0 and {self.num_layers} (1-based; 0 is the encoder input), but is {layer} instead."
            )

        return layer

    def _iter_outputs(self, seqs: Tensor, seqs_layout: BatchLayout) -> Iterator[tuple[Tensor, BatchLayout]]:
        if seqs_layout.packed:
            raise ValueError("`seqs` must not be a packed batch.")

        if seqs.ndim != 3 or seqs.size(-1) != self.num_fbank_channels:
            raise ValueError(
                f"`seqs` must be {self.num_fbank_channels}-channel filterbanks of shape (N, S, {self.num_fbank_channels}), but has shape {tuple(seqs.shape)} instead."
            )

        # Callers hold fp32 fbanks; a bf16 encoder would reject them.
        weight = self.encoder_frontend.post_extract_layer_norm.weight
        if weight is not None:
            seqs = seqs.to(weight.dtype)

        # Frame stacking, layer norm and projection; no masker, unlike
        # `Wav2Vec2Model.run_frontend` (pretraining). A pair of frames holding
        # any padding is padding.
        seqs, seqs_layout = self.encoder_frontend(seqs, seqs_layout)

        # Padding may hold anything, even NaN, which a zero attention weight
        # does not cancel; transformers zeroes the encoder input too.
        seqs = zero_padding(seqs, seqs_layout)

        yield seqs, seqs_layout

        # Layer by layer rather than `encoder.forward` with a layer hook: in
        # fairseq2 0.8.1 a hook returning `False` does not stop the stack.
        attn_bias_cache = AttentionBiasCache()

        for encoder_layer in self.encoder.layers:
            seqs = encoder_layer(seqs, seqs_layout, attn_bias_cache)

            seqs = zero_padding(seqs, seqs_layout)

            yield seqs, seqs_layout

    def extra_repr(self) -> str:
        return f"num_fbank_channels={self.num_fbank_channels}, model_dim={self.model_dim}"
