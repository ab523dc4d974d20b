from __future__ import annotations

from fairseq2.models import ModelHubAccessor

from fairseq2_speechmapper.models.w2vbert2.config import (
    W2VBERT2_FAMILY,
    W2VBert2Config,
)
from fairseq2_speechmapper.models.w2vbert2.model import W2VBert2Model

get_w2vbert2_model_hub = ModelHubAccessor(W2VBERT2_FAMILY, kls=W2VBert2Model, config_kls=W2VBert2Config)
