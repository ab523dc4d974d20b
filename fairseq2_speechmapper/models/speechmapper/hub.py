from __future__ import annotations

from fairseq2.models import ModelHubAccessor

from fairseq2_speechmapper.models.speechmapper.config import (
    SPEECHMAPPER_FAMILY,
    SpeechMapperConfig,
)
from fairseq2_speechmapper.models.speechmapper.model import SpeechMapper

get_speechmapper_model_hub = ModelHubAccessor(SPEECHMAPPER_FAMILY, kls=SpeechMapper, config_kls=SpeechMapperConfig)
