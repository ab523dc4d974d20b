from __future__ import annotations

from typing import Any

from torch.nn import Module

from fairseq2.error import NotSupportedError
from fairseq2.models.utils.ac import apply_layerwise_ac
from fairseq2.models.utils.fsdp import apply_layerwise_fsdp
from fairseq2.nn.fsdp import FSDPWrapper

from fairseq2_speechmapper.models.speechmapper.model import SpeechMapper


def apply_fsdp_to_speechmapper(model: SpeechMapper, granularity: str, wrapper: FSDPWrapper) -> Module:
    if granularity == "layer":
        for block in model.blocks:
            apply_layerwise_fsdp(block.encoder.layers, wrapper)  # type: ignore[union-attr, arg-type]

        return model

    if granularity == "stack":
        for block in model.blocks:
            block.register_module("encoder", wrapper(block.encoder))  # type: ignore[union-attr, arg-type]

        return model

    raise NotSupportedError(f"`granularity` must be 'layer' or 'stack', but is '{granularity}' instead.")


def apply_ac_to_speechmapper(model: SpeechMapper, every_nth_layer: int) -> Module:
    for block in model.blocks:
        apply_layerwise_ac(block.encoder.layers, every_nth_layer)  # type: ignore[union-attr, arg-type]

    return model


def compile_speechmapper(model: SpeechMapper, *args: Any, **kwargs: Any) -> None:
    # Layer-wise, as fairseq2 compiles its own stacks: the varying sequence
    # lengths of speech recompile a whole-model graph far more often.
    for block in model.blocks:
        for layer in block.encoder.layers:  # type: ignore[union-attr]
            layer.compile(*args, **kwargs)
