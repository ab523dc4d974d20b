"""Speech datasets: manifests, the ``speech_manifest`` dataset family and its
length-bucketed reader."""

from __future__ import annotations

from fairseq2_speechmapper.datasets.audio import BadSampleError as BadSampleError
from fairseq2_speechmapper.datasets.batch import SpeechBatch as SpeechBatch
from fairseq2_speechmapper.datasets.manifest import Manifest as Manifest
from fairseq2_speechmapper.datasets.manifest import ManifestError as ManifestError
from fairseq2_speechmapper.datasets.manifest import ManifestRecord as ManifestRecord
from fairseq2_speechmapper.datasets.manifest import read_manifest as read_manifest
from fairseq2_speechmapper.datasets.speech import SPEECH_MANIFEST_FAMILY as SPEECH_MANIFEST_FAMILY
from fairseq2_speechmapper.datasets.speech import ExampleLoader as ExampleLoader
from fairseq2_speechmapper.datasets.speech import SpeechManifestDataset as SpeechManifestDataset
from fairseq2_speechmapper.datasets.speech import SpeechManifestDatasetConfig as SpeechManifestDatasetConfig
from fairseq2_speechmapper.datasets.speech import SpeechReadOptions as SpeechReadOptions
from fairseq2_speechmapper.datasets.speech import create_speech_reader as create_speech_reader
from fairseq2_speechmapper.datasets.speech import make_length_batches as make_length_batches
from fairseq2_speechmapper.datasets.speech import open_speech_manifest_dataset as open_speech_manifest_dataset
from fairseq2_speechmapper.datasets.text import TextNormalizationConfig as TextNormalizationConfig
from fairseq2_speechmapper.datasets.text import TextNormalizer as TextNormalizer
from fairseq2_speechmapper.datasets.text import normalize_for_wer as normalize_for_wer
