from __future__ import annotations

from fairseq2_speechmapper.models.w2vbert2.config import (
    W2VBERT2_FAMILY as W2VBERT2_FAMILY,
)
from fairseq2_speechmapper.models.w2vbert2.config import (
    W2VBert2Config as W2VBert2Config,
)
from fairseq2_speechmapper.models.w2vbert2.config import (
    register_w2vbert2_configs as register_w2vbert2_configs,
)
from fairseq2_speechmapper.models.w2vbert2.config import (
    tiny_w2vbert2_config as tiny_w2vbert2_config,
)
from fairseq2_speechmapper.models.w2vbert2.factory import (
    W2VBert2EncoderFactory as W2VBert2EncoderFactory,
)
from fairseq2_speechmapper.models.w2vbert2.factory import (
    W2VBert2Factory as W2VBert2Factory,
)
from fairseq2_speechmapper.models.w2vbert2.factory import (
    create_w2vbert2_model as create_w2vbert2_model,
)
from fairseq2_speechmapper.models.w2vbert2.factory import (
    to_wav2vec2_encoder_config as to_wav2vec2_encoder_config,
)
from fairseq2_speechmapper.models.w2vbert2.frontend import (
    W2VBERT2_NUM_FBANK_CHANNELS as W2VBERT2_NUM_FBANK_CHANNELS,
)
from fairseq2_speechmapper.models.w2vbert2.frontend import (
    W2VBERT2_SAMPLE_RATE as W2VBERT2_SAMPLE_RATE,
)
from fairseq2_speechmapper.models.w2vbert2.frontend import (
    compute_w2vbert2_fbank as compute_w2vbert2_fbank,
)
from fairseq2_speechmapper.models.w2vbert2.frontend import (
    create_w2vbert2_fbank_converter as create_w2vbert2_fbank_converter,
)
from fairseq2_speechmapper.models.w2vbert2.hub import (
    get_w2vbert2_model_hub as get_w2vbert2_model_hub,
)
from fairseq2_speechmapper.models.w2vbert2.interop import (
    convert_w2vbert2_state_dict as convert_w2vbert2_state_dict,
)
from fairseq2_speechmapper.models.w2vbert2.model import (
    W2VBert2Model as W2VBert2Model,
)
from fairseq2_speechmapper.models.w2vbert2.registration import (
    register_w2vbert2_family as register_w2vbert2_family,
)
