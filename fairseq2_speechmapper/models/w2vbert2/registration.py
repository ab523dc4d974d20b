from __future__ import annotations

from fairseq2.composition import register_model_family
from fairseq2.runtime.dependency import DependencyContainer

from fairseq2_speechmapper.models.w2vbert2.config import (
    W2VBERT2_FAMILY,
    W2VBert2Config,
    register_w2vbert2_configs,
)
from fairseq2_speechmapper.models.w2vbert2.factory import create_w2vbert2_model
from fairseq2_speechmapper.models.w2vbert2.interop import convert_w2vbert2_state_dict
from fairseq2_speechmapper.models.w2vbert2.model import W2VBert2Model


def register_w2vbert2_family(container: DependencyContainer) -> None:
    """Registers the ``w2vbert2`` model family and its architectures."""
    register_model_family(
        container,
        W2VBERT2_FAMILY,
        kls=W2VBert2Model,
        config_kls=W2VBert2Config,
        factory=create_w2vbert2_model,
        state_dict_converter=convert_w2vbert2_state_dict,
    )

    register_w2vbert2_configs(container)
