"""Writers of speech manifests from official corpus layouts
(``fairseq2 speechmapper prepare``).

A manifest is NeMo-style JSONL, one file per split (``<OUT>/<split>.jsonl``),
one utterance per line::

    {"audio_filepath": "/abs/path.flac", "duration": 3.2, "text": "...", "id": "...",
     "offset": 12.5, "lang": "en", "translation": "...", "tgt_lang": "de", "speaker": "..."}

``offset`` is only written for segments of longer files; the task fields
(``lang``, ``translation``, ``tgt_lang``, ``speaker``; for spoken QA
``question``, ``answers`` (a list), ``part`` and ``choices``) only where the
corpus has them. Durations are read from the audio headers.

The modules of the corpora (:mod:`.librispeech`, :mod:`.common_voice`,
:mod:`.covost2`, :mod:`.europarl_st`, :mod:`.spoken_squad`, :mod:`.librisqa`)
import soundfile; this package itself
stays light, since the command line (:mod:`fairseq2_speechmapper.cli.prepare`)
imports it on every start.
"""
