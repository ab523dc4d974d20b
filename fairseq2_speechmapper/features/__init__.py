"""The speech encoder feature cache: ``extract-features`` writes it
(the `extract_features` recipe, through :mod:`.writer`), pretraining reads it instead
of running the frozen speech encoder on audio every epoch, and so can instruction tuning."""

from __future__ import annotations

from fairseq2_speechmapper.features.cache import FeatureCache as FeatureCache
from fairseq2_speechmapper.features.cache import FeatureCacheError as FeatureCacheError
from fairseq2_speechmapper.features.cache import FeatureCacheHeader as FeatureCacheHeader
from fairseq2_speechmapper.features.cache import SplitPlan as SplitPlan
from fairseq2_speechmapper.features.cache import card_checkpoint as card_checkpoint
from fairseq2_speechmapper.features.config import FeatureStorageSection as FeatureStorageSection
from fairseq2_speechmapper.features.config import SpeechEncoderSection as SpeechEncoderSection
from fairseq2_speechmapper.features.reader import CachedFeatureEncoder as CachedFeatureEncoder
from fairseq2_speechmapper.features.reader import FeatureCacheDataset as FeatureCacheDataset
from fairseq2_speechmapper.features.reader import check_frame_average as check_frame_average
from fairseq2_speechmapper.features.reader import open_cached_features as open_cached_features
from fairseq2_speechmapper.features.speech_encoder import SpeechEncoderFeatures as SpeechEncoderFeatures
from fairseq2_speechmapper.features.speech_encoder import SpeechFeatureEncoder as SpeechFeatureEncoder
from fairseq2_speechmapper.features.speech_encoder import load_speech_encoder_features as load_speech_encoder_features
from fairseq2_speechmapper.features.storage import StorageReport as StorageReport
from fairseq2_speechmapper.features.storage import measure_storage as measure_storage
from fairseq2_speechmapper.features.verify import verify_feature_cache as verify_feature_cache
