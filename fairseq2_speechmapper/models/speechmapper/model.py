from __future__ import annotations

from collections.abc import Sequence
from typing import final

import torch
from torch import Tensor
from torch.nn import Conv1d, Dropout, Module, ModuleList, Parameter

from fairseq2.models.transformer import TransformerEncoder
from fairseq2.nn import BatchLayout, PositionEncoder, Projection

from fairseq2_speechmapper.models.padding import zero_padding
from fairseq2_speechmapper.models.speechmapper.lora import LLMLoRA


@final
class SpeechMapperBlock(Module):
    """Downsamples its input with a strided convolution, contextualises it with
    Transformer encoder layers and projects it to a wider representation."""

    def __init__(
        self,
        conv: Conv1d,
        conv_activation: Module,
        pos_encoder: PositionEncoder | None,
        encoder: TransformerEncoder,
        up_proj: Projection,
    ) -> None:
        super().__init__()

        self.conv = conv
        self.conv_activation = conv_activation
        self.pos_encoder: PositionEncoder | None

        self.register_module("pos_encoder", pos_encoder)

        self.encoder = encoder
        self.up_proj = up_proj

    def output_lengths(self, seq_lens: Tensor) -> Tensor:
        """Returns the output length of each input length (no padding in the
        convolution, so a window never reaches past a sequence's end)."""
        kernel_size, stride = self.conv.kernel_size[0], self.conv.stride[0]

        return torch.div(seq_lens - kernel_size, stride, rounding_mode="floor") + 1

    def output_len(self, seq_len: int) -> int:
        """:meth:`output_lengths` of one length held on the host."""
        kernel_size, stride = int(self.conv.kernel_size[0]), int(self.conv.stride[0])

        return (seq_len - kernel_size) // stride + 1

    def forward(self, seqs: Tensor, seqs_layout: BatchLayout) -> tuple[Tensor, BatchLayout]:
        # (N, S, M) -> (N, M, S) -> (N, M', S') -> (N, S', M')
        seqs = self.conv(seqs.transpose(1, 2)).transpose(1, 2)

        seqs = self.conv_activation(seqs)

        # From the layout's host copy of the lengths: reading the device copy
        # back would make the host wait for the accelerator at every block.
        seq_lens = [self.output_len(n) for n in seqs_layout.seq_lens]

        seqs_layout = BatchLayout.of(seqs, seq_lens)

        seqs = zero_padding(seqs, seqs_layout)

        if self.pos_encoder is not None:
            seqs = self.pos_encoder(seqs, seqs_layout)

        seqs = self.encoder(seqs, seqs_layout)

        seqs = self.up_proj(seqs)

        return zero_padding(seqs, seqs_layout), seqs_layout


@final
class SpeechMapperFinalProjection(Module):
    """Maps the last block's output into the LLM's input-embedding space, with
    one linear layer or a two-layer MLP."""

    def __init__(
        self,
        proj: Projection,
        activation: Module | None = None,
        output_proj: Projection | None = None,
        dropout: Dropout | None = None,
    ) -> None:
        super().__init__()

        self.proj = proj

        self.activation: Module | None
        self.output_proj: Projection | None
        self.dropout: Dropout | None

        self.register_module("activation", activation)
        self.register_module("dropout", dropout)
        self.register_module("output_proj", output_proj)

    def forward(self, seqs: Tensor) -> Tensor:
        seqs = self.proj(seqs)

        if self.output_proj is not None:
            if self.activation is not None:
                seqs = self.activation(seqs)

            if self.dropout is not None:
                seqs = self.dropout(seqs)

            seqs = self.output_proj(seqs)

        return seqs


@final
class SpeechMapperCTCHead(Module):
    """Stage 1's auxiliary CTC head: projects a block's output into the LLM's
    embedding space, where a token's score is its cosine similarity with the
    token's embedding (scaled by a learned temperature), the blank a learned
    vector's. Scoring against the frozen table ties the head to the space the
    mapper's outputs must reach, and a caller may score any subset of the
    vocabulary (e.g. the batch's tokens) instead of all of it."""

    def __init__(self, proj: Projection) -> None:
        super().__init__()

        self.proj = proj

        self.blank = Parameter(torch.randn(proj.output_dim) * 0.02)

        # cos in [-1, 1] needs a scale to give peaked distributions; 10 to start.
        self.log_scale = Parameter(torch.tensor(2.3))

    def forward(self, seqs: Tensor) -> Tensor:
        return self.proj(seqs)

    def logits(self, states: Tensor, token_embeddings: Tensor) -> Tensor:
        """The scores of ``token_embeddings`` *Shape:* :math:`(V,M)` and, last,
        of the blank for the projected ``states`` *Shape:* :math:`(N,S,M)`.
        *Shape:* :math:`(N,S,V+1)`."""
        vocab = torch.cat([token_embeddings.to(states.dtype), self.blank[None, :].to(states.dtype)])

        states = torch.nn.functional.normalize(states, dim=-1)

        vocab = torch.nn.functional.normalize(vocab, dim=-1)

        return (states @ vocab.T) * self.log_scale.exp()


@final
class SpeechMapperIntegrateAndFire(Module):
    """Continuous integrate-and-fire (Dong & Xu, 2020): a weight in (0, 1) per
    frame; output ``k`` is the weighted sum of the frames whose cumulative
    weight covers ``[k, k + 1)``. The mapper's outputs then come one per token,
    in order, without a later block having to learn to move the content to
    the front. In training the weights are rescaled to the target count (the
    transcript's tokens plus the end position), so that output ``k`` faces
    token ``k``; otherwise the count is the rounded sum of the weights."""

    def __init__(self, weight_proj: Projection) -> None:
        super().__init__()

        self.weight_proj = weight_proj

    def forward(
        self, seqs: Tensor, seqs_layout: BatchLayout, target_counts: Sequence[int] | None = None
    ) -> tuple[Tensor, BatchLayout, Tensor]:
        """
        :returns: The fired vectors *Shape:* :math:`(N,K,M)`, zero past each
            count, their layout, and each sequence's sum of weights before any
            rescaling *Shape:* :math:`(N,)` (what the count term trains).
        """
        weights = torch.sigmoid(self.weight_proj(seqs).squeeze(-1).float())

        weights = zero_padding(weights.unsqueeze(-1), seqs_layout).squeeze(-1)

        weight_sums = weights.sum(dim=-1)

        if target_counts is not None:
            counts = torch.tensor(target_counts, device=seqs.device, dtype=weights.dtype)

            weights = weights * (counts / weight_sums.clamp(min=1e-4)).unsqueeze(-1)

            count_list = [int(n) for n in target_counts]
        else:
            # The output length depends on the audio: one host read.
            count_list = weight_sums.round().clamp(min=1).to(torch.int64).tolist()

        ends = weights.cumsum(dim=-1)

        starts = ends - weights

        # (K,) against (N, 1, S): how much of each frame's weight falls into
        # each output's unit interval.
        positions = torch.arange(max(count_list), device=seqs.device, dtype=weights.dtype).view(1, -1, 1)

        overlap = torch.minimum(ends.unsqueeze(1), positions + 1.0) - torch.maximum(starts.unsqueeze(1), positions)

        fired = overlap.clamp(min=0.0).to(seqs.dtype) @ seqs

        fired_layout = BatchLayout.of(fired, count_list)

        return zero_padding(fired, fired_layout), fired_layout, weight_sums


@final
class SpeechMapper(Module):
    """Maps frozen speech foundation model features to a frozen LLM's input
    embeddings, as described in :cite:t:`https://arxiv.org/abs/2601.20417`."""

    def __init__(
        self,
        frame_average: int,
        blocks: list[SpeechMapperBlock],
        final_proj: SpeechMapperFinalProjection,
        *,
        input_dim: int,
        llm_dim: int,
        llm_lora: LLMLoRA | None = None,
        ctc_head: SpeechMapperCTCHead | None = None,
        ctc_block: int | None = None,
        integrate_fire: SpeechMapperIntegrateAndFire | None = None,
        fire_block: int | None = None,
    ) -> None:
        super().__init__()

        if frame_average < 1:
            raise ValueError(f"`frame_average` must be greater than or equal to 1, but is {frame_average} instead.")

        self.frame_average = frame_average
        self.blocks = ModuleList(blocks)
        self.final_proj = final_proj
        self.input_dim = input_dim
        self.llm_dim = llm_dim

        self.llm_lora: LLMLoRA | None
        """Adapters on the LLM, trained with the mapper (stage 2, optional);
        the mapper's own forward does not use them."""

        self.register_module("llm_lora", llm_lora)

        self.ctc_head: SpeechMapperCTCHead | None

        self.register_module("ctc_head", ctc_head)

        self.ctc_block = ctc_block

        self._ctc_states: tuple[Tensor, BatchLayout] | None = None

        self.integrate_fire: SpeechMapperIntegrateAndFire | None

        self.register_module("integrate_fire", integrate_fire)

        self.fire_block = fire_block

        self._fire_weight_sums: Tensor | None = None

    def pop_ctc_states(self) -> tuple[Tensor, BatchLayout]:
        """The CTC head's projection of :attr:`ctc_block`'s output in the last
        training-mode forward, and its layout; each forward's once."""
        if self._ctc_states is None:
            raise RuntimeError(
                "The mapper has no CTC states: it has no CTC head, or was not run in training mode since they were last taken."
            )

        states, self._ctc_states = self._ctc_states, None

        return states

    def pop_fire_weight_sums(self) -> Tensor:
        """Each sequence's sum of integrate-and-fire weights in the last
        training-mode forward, before rescaling *Shape:* :math:`(N,)`; each
        forward's once."""
        if self._fire_weight_sums is None:
            raise RuntimeError(
                "The mapper has no integrate-and-fire weights: it does not integrate and fire, or was not run in training mode since they were last taken."
            )

        weight_sums, self._fire_weight_sums = self._fire_weight_sums, None

        return weight_sums

    @property
    def integrates_and_fires(self) -> bool:
        """``True`` if the output length depends on the audio's content (one
        vector per predicted token), not only on its length."""
        return self.integrate_fire is not None

    def output_lengths(self, seq_lens: Tensor) -> Tensor:
        """Returns the number of output vectors for each input length in
        frames; lengths below :attr:`min_input_len` give values below 1."""
        if self.integrates_and_fires:
            raise ValueError(
                "The output length of a mapper that integrates and fires depends on the audio, not only on its length."
            )

        seq_lens = torch.div(seq_lens, self.frame_average, rounding_mode="floor")

        for block in self.blocks:
            seq_lens = block.output_lengths(seq_lens)  # type: ignore[operator]

        return seq_lens

    @property
    def _framed_blocks(self) -> list[Module]:
        # The blocks that run on frames: those up to the one that fires.
        if self.fire_block is None:
            return list(self.blocks)

        return list(self.blocks)[: self.fire_block + 1]

    @property
    def downsampling_factor(self) -> int:
        """The number of input frames per output vector, for long inputs (for
        a mapper that integrates and fires, per vector it integrates)."""
        factor = self.frame_average

        for block in self._framed_blocks:
            factor *= int(block.conv.stride[0])  # type: ignore[index]

        return factor

    @property
    def min_input_len(self) -> int:
        """The fewest input frames that yield one output vector."""
        seq_len = 1

        for block in reversed(self._framed_blocks):
            kernel_size, stride = int(block.conv.kernel_size[0]), int(block.conv.stride[0])  # type: ignore[index]

            seq_len = (seq_len - 1) * stride + kernel_size

        return seq_len * self.frame_average

    def forward(
        self, seqs: Tensor, seqs_layout: BatchLayout, *, target_counts: Sequence[int] | None = None
    ) -> tuple[Tensor, BatchLayout]:
        """
        :param seqs: The speech features. *Shape:* :math:`(N,S,M_{in})`.
        :param seqs_layout: The layout of ``seqs`` (right padding only).
        :param target_counts: For a mapper that integrates and fires, in
            training mode: each sequence's number of outputs (its transcript's
            tokens plus the end position). Ignored otherwise.

        :returns: The mapped embeddings, *Shape:* :math:`(N,S_{out},M_{llm})`,
            zero at padded positions, and their layout.
        """
        if seqs_layout.packed:
            raise ValueError("`seqs` must not be a packed batch.")

        if seqs.size(-1) != self.input_dim:
            raise ValueError(
                f"The mapper expects {self.input_dim}-dimensional speech features, but the features are {seqs.size(-1)}-dimensional. Check that the speech encoder and layer match the mapper's card."
            )

        # The layout's host-side minimum: no read-back from the accelerator.
        min_len = seqs_layout.min_seq_len
        if min_len < self.min_input_len:
            raise ValueError(
                f"Each speech sequence must be at least {self.min_input_len} frames long to yield one output vector, but the shortest is {min_len} frames long."
            )

        seqs = zero_padding(seqs, seqs_layout)

        seqs, seqs_layout = self._average_frames(seqs, seqs_layout)

        for block_idx, block in enumerate(self.blocks):
            seqs, seqs_layout = block(seqs, seqs_layout)

            # Inside forward, so that data-parallel wrappers see the head used.
            if block_idx == self.ctc_block and self.ctc_head is not None and self.training:
                self._ctc_states = (self.ctc_head(seqs), seqs_layout)

            if block_idx == self.fire_block and self.integrate_fire is not None:
                seqs, seqs_layout, weight_sums = self.integrate_fire(
                    seqs, seqs_layout, target_counts if self.training else None
                )

                if self.training:
                    self._fire_weight_sums = weight_sums

        seqs = self.final_proj(seqs)

        return zero_padding(seqs, seqs_layout), seqs_layout

    def _average_frames(self, seqs: Tensor, seqs_layout: BatchLayout) -> tuple[Tensor, BatchLayout]:
        if self.frame_average == 1:
            return seqs, seqs_layout

        batch_size, num_frames, model_dim = seqs.shape

        # A trailing partial group is dropped, as in the length computation.
        num_frames -= num_frames % self.frame_average

        seqs = seqs[:, :num_frames].reshape(batch_size, num_frames // self.frame_average, self.frame_average, model_dim)

        seqs = seqs.mean(dim=2)

        seq_lens = [n // self.frame_average for n in seqs_layout.seq_lens]

        return seqs, BatchLayout.of(seqs, seq_lens)

    def extra_repr(self) -> str:
        return f"frame_average={self.frame_average}, input_dim={self.input_dim}, llm_dim={self.llm_dim}"
