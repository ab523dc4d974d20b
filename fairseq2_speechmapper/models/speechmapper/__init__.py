from __future__ import annotations

from fairseq2_speechmapper.models.speechmapper.config import (
    SPEECHMAPPER_FAMILY as SPEECHMAPPER_FAMILY,
)
from fairseq2_speechmapper.models.speechmapper.config import (
    LLMLoRAConfig as LLMLoRAConfig,
)
from fairseq2_speechmapper.models.speechmapper.config import (
    SpeechMapperBlockConfig as SpeechMapperBlockConfig,
)
from fairseq2_speechmapper.models.speechmapper.config import (
    SpeechMapperConfig as SpeechMapperConfig,
)
from fairseq2_speechmapper.models.speechmapper.config import (
    register_speechmapper_configs as register_speechmapper_configs,
)
from fairseq2_speechmapper.models.speechmapper.config import (
    tiny_speechmapper_config as tiny_speechmapper_config,
)
from fairseq2_speechmapper.models.speechmapper.factory import (
    SpeechMapperFactory as SpeechMapperFactory,
)
from fairseq2_speechmapper.models.speechmapper.factory import (
    create_speechmapper_model as create_speechmapper_model,
)
from fairseq2_speechmapper.models.speechmapper.hub import (
    get_speechmapper_model_hub as get_speechmapper_model_hub,
)
from fairseq2_speechmapper.models.speechmapper.lora import (
    LLMLoRA as LLMLoRA,
)
from fairseq2_speechmapper.models.speechmapper.lora import (
    LLMLoRAError as LLMLoRAError,
)
from fairseq2_speechmapper.models.speechmapper.model import (
    SpeechMapper as SpeechMapper,
)
from fairseq2_speechmapper.models.speechmapper.model import (
    SpeechMapperBlock as SpeechMapperBlock,
)
from fairseq2_speechmapper.models.speechmapper.parallel import (
    apply_ac_to_speechmapper as apply_ac_to_speechmapper,
)
from fairseq2_speechmapper.models.speechmapper.parallel import (
    apply_fsdp_to_speechmapper as apply_fsdp_to_speechmapper,
)
from fairseq2_speechmapper.models.speechmapper.parallel import (
    compile_speechmapper as compile_speechmapper,
)
