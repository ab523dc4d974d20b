"""Low-rank adapters on a frozen LLM, owned by the mapper.

The adapters' weights live in the mapper (the one model a recipe trains and
checkpoints); :meth:`LLMLoRA.attach` adds their output to the LLM's query and
value projections with forward hooks, so the LLM itself is never modified and
stays frozen, also under the KV cache of generation.
"""

from __future__ import annotations

import math
from typing import final

import torch
from torch import Tensor
from torch.nn import Dropout, Module, Parameter, ParameterList
from torch.utils.hooks import RemovableHandle

from fairseq2.models.transformer_lm import TransformerLM

from fairseq2_speechmapper.errors import SpeechMapperError
from fairseq2_speechmapper.models.speechmapper.config import LLMLoRAConfig


class LLMLoRAError(SpeechMapperError):
    pass


@final
class LLMLoRA(Module):
    """``W x + (alpha / rank) · B A x`` on each layer's query and value
    projections; ``B`` starts at zero, so attaching changes nothing until trained."""

    def __init__(self, config: LLMLoRAConfig) -> None:
        super().__init__()

        if config.rank < 1 or min(config.num_layers, config.model_dim, config.q_dim, config.v_dim) < 1:
            raise ValueError(
                f"The LoRA configuration must have a positive rank and the LLM's dimensions, but is {config}."
            )

        self.config = config

        self.scale = config.alpha / config.rank

        def down() -> ParameterList:
            return ParameterList(
                Parameter(torch.empty(config.rank, config.model_dim)) for _ in range(config.num_layers)
            )

        def up(output_dim: int) -> ParameterList:
            return ParameterList(Parameter(torch.zeros(output_dim, config.rank)) for _ in range(config.num_layers))

        self.q_down, self.q_up = down(), up(config.q_dim)
        self.v_down, self.v_up = down(), up(config.v_dim)

        for weight in (*self.q_down, *self.v_down):
            torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))

        self.dropout = Dropout(config.dropout_p) if config.dropout_p > 0.0 else None

    def attach(self, llm: TransformerLM) -> list[RemovableHandle]:
        """Adds the adapters' output to ``llm``'s projections; returns the hooks."""
        layers = list(llm.decoder.layers)  # type: ignore[arg-type]

        if len(layers) != self.config.num_layers:
            raise LLMLoRAError(
                f"The mapper's LoRA adapters are for {self.config.num_layers} LLM layers, but the LLM has {len(layers)}."
            )

        handles = []

        for layer_idx, layer in enumerate(layers):
            attention = layer.self_attn

            for projection, down, up in (
                (attention.q_proj, self.q_down, self.q_up),
                (attention.v_proj, self.v_down, self.v_up),
            ):
                if (projection.input_dim, projection.output_dim) != (down[layer_idx].size(1), up[layer_idx].size(0)):
                    raise LLMLoRAError(
                        f"The mapper's LoRA adapters map {down[layer_idx].size(1)} -> {up[layer_idx].size(0)}, but layer {layer_idx} of the LLM projects {projection.input_dim} -> {projection.output_dim}."
                    )

                handles.append(projection.register_forward_hook(self._hook(down[layer_idx], up[layer_idx])))

        return handles

    def _hook(self, down: Tensor, up: Tensor):  # type: ignore[no-untyped-def]
        def add_adapter_output(module: Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            seqs = inputs[0].to(down.dtype)

            if self.dropout is not None:
                seqs = self.dropout(seqs)

            return output + (seqs @ down.T @ up.T * self.scale).to(output.dtype)

        return add_adapter_output
