from __future__ import annotations

from fairseq2_speechmapper.speech_encoders.base import SpeechEncoder as SpeechEncoder
from fairseq2_speechmapper.speech_encoders.loader import (
    SpeechEncoderNotSupportedError as SpeechEncoderNotSupportedError,
)
from fairseq2_speechmapper.speech_encoders.loader import (
    SpeechEncoderOptions as SpeechEncoderOptions,
)
from fairseq2_speechmapper.speech_encoders.loader import (
    load_speech_encoder as load_speech_encoder,
)
from fairseq2_speechmapper.speech_encoders.w2vbert2 import (
    W2VBert2SpeechEncoder as W2VBert2SpeechEncoder,
)
from fairseq2_speechmapper.speech_encoders.wav2vec2 import (
    Wav2Vec2SpeechEncoder as Wav2Vec2SpeechEncoder,
)
from fairseq2_speechmapper.speech_encoders.whisper import (
    WhisperSpeechEncoder as WhisperSpeechEncoder,
)
from fairseq2_speechmapper.speech_encoders.whisper import (
    WhisperWindow as WhisperWindow,
)
