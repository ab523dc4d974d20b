"""The demo's pad token on the real SmolLM2 (issue 12): the frozen LLM must
still read a transcript whose embeddings are followed by pad embeddings in the
speech slot of its chat prompt, since that is what a stage-1 mapper outputs.

SmolLM2's tokenizer pad `<|endoftext|>` is its document separator: after it the
LLM starts a new document and the transcript's NLL goes from ~1 to ~5 nats,
which is why the demo preset pads with `<empty_output>` instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from fairseq2_speechmapper.demo import SMOLLM2_CARD, DemoAssets
from fairseq2_speechmapper.speech_llm import ChatTemplate, MappedSpeech, SpeechLLM
from fairseq2_speechmapper.speech_llm.tasks import DEFAULT_ASR_PROMPTS
from fairseq2_speechmapper.stage1 import resolve_pad_idx

pytestmark = pytest.mark.slow

DEMO_PRESET = Path(__file__).parents[1] / "recipes" / "pretrain" / "presets" / "demo.yaml"

NUM_TRANSCRIPTS = 4

# About what the demo mapper outputs after a 10-token transcript.
NUM_PADS = 24

# The pads may cost the transcript at most this much NLL (nats per token).
MAX_NLL_INCREASE = 0.5


class _LLMReader:
    """The frozen SmolLM2 with a transcript's own embeddings (and pads) in the
    speech slot of an ASR prompt, through the library's splicing code."""

    def __init__(self, assets: DemoAssets) -> None:
        from fairseq2.data.tokenizers import load_tokenizer
        from fairseq2.models import load_model

        from fairseq2_speechmapper.demo.checks import card_from_dict

        with assets.card_file.open(encoding="utf-8") as fp:
            card = card_from_dict(next(c for c in yaml.safe_load_all(fp) if c["name"] == SMOLLM2_CARD))

        self.tokenizer = load_tokenizer(card)  # type: ignore[arg-type]

        llm = load_model(card, device=torch.device("cpu"), dtype=torch.float32).eval()  # type: ignore[call-overload]

        chat_template = ChatTemplate(self.tokenizer, llm_name=SMOLLM2_CARD)

        # Only the splicing and the LLM are used: no speech, no mapper.
        self.model = SpeechLLM(None, torch.nn.Identity(), llm, chat_template)  # type: ignore[arg-type]

        self.prompt = chat_template.speech_prompt(DEFAULT_ASR_PROMPTS[0])

        encoder = self.tokenizer.create_raw_encoder()

        with assets.train_manifest.open(encoding="utf-8") as fp:
            texts = list(dict.fromkeys(json.loads(line)["text"] for line in fp))[:NUM_TRANSCRIPTS]

        self.texts = texts
        self.transcript_ids = [encoder(text).to(torch.int64) for text in texts]

    @torch.no_grad()
    def nll(self, pad_idx: int | None) -> list[float]:
        """Each transcript's NLL per response token (the transcript and the
        end of turn) given its own embeddings, followed by ``NUM_PADS`` pad
        embeddings unless ``pad_idx`` is ``None``, as the speech."""
        speech = []

        for ids in self.transcript_ids:
            if pad_idx is not None:
                ids = torch.cat([ids, torch.full((NUM_PADS,), pad_idx, dtype=torch.int64)])

            speech.append(self.model.embed_tokens(ids))

        lens = [s.size(0) for s in speech]

        mapped = MappedSpeech(outputs=torch.nn.utils.rnn.pad_sequence(speech, batch_first=True), lens=lens)

        prefixes = self.model.build_prefixes(mapped, [self.prompt] * len(speech))

        responses = [self.model.chat_template.response_ids(text) for text in self.texts]

        output = self.model.response_logits(prefixes, responses)

        token_nll = torch.nn.functional.cross_entropy(output.logits, output.targets, reduction="none")

        return [float(part.mean()) for part in token_nll.split(output.response_lens)]

    def pad_idx(self, pad_token: str | None) -> int:
        return resolve_pad_idx(self.tokenizer, pad_token, llm_name=SMOLLM2_CARD)


@pytest.fixture(scope="module")
def reader(demo_assets: DemoAssets) -> _LLMReader:
    return _LLMReader(demo_assets)


def _demo_pad_token() -> str | None:
    with DEMO_PRESET.open(encoding="utf-8") as fp:
        return yaml.safe_load(fp)["llm"]["pad_token"]  # type: ignore[no-any-return]


def _nll_increases(reader: _LLMReader, pad_token: str | None) -> list[float]:
    alone = reader.nll(None)
    padded = reader.nll(reader.pad_idx(pad_token))

    print(f"pad {pad_token!r}: NLL alone {[round(x, 2) for x in alone]}, with pads {[round(x, 2) for x in padded]}")

    return [p - a for p, a in zip(padded, alone)]


def test_the_llm_still_reads_a_transcript_followed_by_the_demo_pads(reader: _LLMReader) -> None:
    increases = _nll_increases(reader, _demo_pad_token())

    assert max(increases) <= MAX_NLL_INCREASE, increases


def test_the_document_separator_as_pad_derails_it(reader: _LLMReader) -> None:
    # SmolLM2's tokenizer pad, the demo's pad before issue 12: the check above
    # would have caught it.
    assert reader.pad_idx(None) == reader.pad_idx("<|endoftext|>")

    increases = _nll_increases(reader, "<|endoftext|>")

    assert min(increases) > MAX_NLL_INCREASE, increases
