"""The speech LLM: frozen speech encoder → mapper → frozen LLM, the mapper's output
spliced into the LLM's chat prompt in place of token embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import final

import torch
from torch import Tensor
from torch.nn import Module

from fairseq2.models.transformer_lm import TransformerLM
from fairseq2.nn.utils.padding import pad_seqs

from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.datasets.batch import to_device
from fairseq2_speechmapper.features import SpeechEncoderFeatures
from fairseq2_speechmapper.speech_llm.chat import ChatTemplate, SpeechPrompt


@final
@dataclass(kw_only=True)
class MappedSpeech:
    outputs: Tensor
    """The mapper's outputs (in the mapper's dtype). *Shape:* :math:`(N,T,M)`."""

    lens: list[int]


@final
@dataclass(kw_only=True)
class ResponseLogits:
    logits: Tensor
    """The LLM's logits at the response positions only. *Shape:* :math:`(R,V)`."""

    targets: Tensor
    """The response tokens they predict. *Shape:* :math:`(R,)`."""

    response_lens: list[int]


@final
class SpeechLLM:
    """Runs the pieces of a speech LLM; only the mapper is trainable."""

    def __init__(
        self, speech_encoder: SpeechEncoderFeatures, mapper: Module, llm: TransformerLM, chat_template: ChatTemplate
    ) -> None:
        self.speech_encoder = speech_encoder
        self.mapper = mapper
        self.llm = llm
        self.chat_template = chat_template

    @property
    def embedding_table(self) -> Tensor:
        return self.llm.decoder_frontend.embed.weight  # type: ignore[return-value]

    def map_speech(self, batch: SpeechBatch) -> MappedSpeech:
        features, features_layout = self.speech_encoder(batch)

        outputs, outputs_layout = self.mapper(features.float(), features_layout)

        return MappedSpeech(outputs=outputs, lens=[int(n) for n in outputs_layout.seq_lens])

    def embed_tokens(self, token_ids: Tensor) -> Tensor:
        return self.llm.decoder_frontend.embed(to_device(token_ids, self.embedding_table.device))  # type: ignore[no-any-return]

    def build_prefixes(self, speech: MappedSpeech, prompts: Sequence[SpeechPrompt]) -> list[Tensor]:
        """Each example's input embeddings up to the start of the response:
        ``embed(before) ; speech ; embed(after)``, in the LLM's dtype. *Shape:*
        :math:`(P_i,M)` each."""
        llm_dtype = self.embedding_table.dtype

        prefixes = []

        for i, prompt in enumerate(prompts):
            speech_embeddings = speech.outputs[i, : speech.lens[i]].to(llm_dtype)

            prefixes.append(
                torch.cat(
                    [self.embed_tokens(prompt.before_ids), speech_embeddings, self.embed_tokens(prompt.after_ids)]
                )
            )

        return prefixes

    def response_logits(self, prefixes: Sequence[Tensor], responses: Sequence[Tensor]) -> ResponseLogits:
        """Teacher-forced logits of each response given its prefix; the LLM's
        output projection runs at the response positions only (the vocabulary
        is large, the responses short)."""
        device = self.embedding_table.device

        sequences = []
        positions = []

        for prefix, response in zip(prefixes, responses):
            response = to_device(response, device)

            sequences.append(torch.cat([prefix, self.embed_tokens(response[:-1])]))

            # The position before each response token predicts it.
            start = prefix.size(0) - 1

            positions.append(torch.arange(start, start + response.numel(), device=device))

        seqs, seqs_layout = pad_seqs(sequences)

        hidden = self.llm.decoder(seqs, seqs_layout)

        rows = torch.cat([torch.full_like(p, i) for i, p in enumerate(positions)])

        response_hidden = hidden[rows, torch.cat(positions)]

        return ResponseLogits(
            logits=self.llm.final_proj(response_hidden),
            targets=to_device(torch.cat(list(responses)), device),
            response_lens=[r.numel() for r in responses],
        )
