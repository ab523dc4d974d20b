"""KV-cached generation from embedding prefixes against the no-cache reference.

Run from the repository root (CPU)::

    .venv/bin/python -m benchmarks.generation [--quick] [--batch-size N] [--max-new-tokens N] [--rounds N] [--threads N] [--json FILE]

Both sides generate greedily from the same batch of prefixes with the same
frozen LLM (fp32, eval mode):

- **KV cache**: :func:`fairseq2_speechmapper.speech_llm.generation.generate_from_embeddings`
  (prefill of the common prefix length in one call, then one position per
  step against fairseq2's incremental state);
- **no cache**: ``generate_greedy_without_cache`` (``fairseq2_speechmapper/speech_llm/uncached_generation.py``),
  a full forward of the right-padded batch at every step.

Each prefix is a speech-LLM prompt: the embedded tokens of a short text
instruction, then "speech" vectors (random, with the norm of the embedding
table's rows), then the embedded tokens of the answer cue; 60–100 positions,
different per example (seeded). No stop tokens, so every example generates
exactly ``--max-new-tokens`` tokens on both sides; the script checks that both
generated the same tokens. Printed: tokens/s of each side (generated tokens
over wall time, the prefill included) and their ratio.

The LLM is SmolLM2-135M-Instruct (the demo card ``smollm2_135m_instruct``) when
``fairseq2 speechmapper make-demo-assets`` has built it, else (and with
``--quick``) the tiny random-weight llama card. Defaults: 8 prefixes, 64 new
tokens, one round, one intra-op thread: about 3–4 minutes on a 2-core CPU,
nearly all of it the no-cache side, whose cost grows with the square of the
length (``--quick``: tiny LLM, 4 prefixes of 32–48, 16 tokens; seconds).
With ``--rounds`` > 1 the sides take turns and each keeps its fastest round
(background load only ever adds time).

Nothing is written to the user's cache: the tiny assets and a copy of the demo
cards go to a temporary cache directory.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from argparse import ArgumentParser
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from benchmarks.common import add_run_options, load_average, write_json

if TYPE_CHECKING:
    from torch import Tensor

    from fairseq2.models.transformer_lm import TransformerLM

_INSTRUCTION: Final = "user: transcribe the audio into text."

_ANSWER_CUE: Final = "\nassistant:"


@dataclass
class Result:
    """One side of the comparison."""

    side: str
    tokens_per_second: float
    seconds: float
    num_tokens: int


def prepare_cards(work_dir: Path, *, use_demo: bool) -> str:
    """Points the extension at a temporary cache directory (before fairseq2
    builds its asset store) holding the tiny cards and, if built and wanted, a
    copy of the demo cards; returns the LLM card to use."""
    from fairseq2_speechmapper.asset_store.paths import CACHE_DIR_ENV, get_cache_cards_dir
    from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD, write_tiny_assets
    from fairseq2_speechmapper.demo import SMOLLM2_CARD
    from fairseq2_speechmapper.demo.builder import CARD_FILE_NAME

    demo_card_file = get_cache_cards_dir() / CARD_FILE_NAME

    os.environ[CACHE_DIR_ENV] = str(work_dir / "cache")

    cards_dir = get_cache_cards_dir()

    cards_dir.mkdir(parents=True)

    write_tiny_assets(work_dir / "cache" / "tiny", cards_dir)

    # The demo cards name absolute paths, so a copy works from anywhere.
    if use_demo and demo_card_file.exists() and f"name: {SMOLLM2_CARD}" in demo_card_file.read_text(encoding="utf-8"):
        shutil.copy(demo_card_file, cards_dir / CARD_FILE_NAME)

        return SMOLLM2_CARD

    if use_demo:
        print(
            "SmolLM2 not built (`fairseq2 speechmapper make-demo-assets`); using the tiny llama card.", file=sys.stderr
        )

    return TINY_LLAMA_CARD


def make_prefixes(
    llm: TransformerLM, card: str, *, batch_size: int, min_len: int, max_len: int, seed: int = 0
) -> list[Tensor]:
    """Instruction tokens + speech-like vectors + answer-cue tokens, embedded;
    ``min_len``–``max_len`` positions each."""
    import torch

    from fairseq2.data.tokenizers import load_tokenizer

    from fairseq2_speechmapper.speech_llm.generation import embed_token_ids

    encoder = load_tokenizer(card).create_raw_encoder()

    generator = torch.Generator().manual_seed(seed)

    table = llm.decoder_frontend.embed.weight

    with torch.inference_mode():
        head, tail = embed_token_ids(llm, encoder(_INSTRUCTION)), embed_token_ids(llm, encoder(_ANSWER_CUE))

        row_std = float(table.std())

        prefixes = []

        for total_len in torch.randint(min_len, max_len + 1, (batch_size,), generator=generator).tolist():
            num_speech = max(total_len - head.size(0) - tail.size(0), 1)

            speech = torch.randn(num_speech, table.size(1), generator=generator) * row_std

            prefixes.append(torch.cat([head, speech, tail]))

    return prefixes


def main() -> int:
    parser = ArgumentParser(description="KV-cached generation vs the no-cache reference.")
    parser.add_argument("--quick", action="store_true", help="tiny LLM, 4 short prefixes, 16 tokens (seconds)")
    parser.add_argument("--batch-size", type=int, help="prefixes (default: 8, --quick 4)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens generated per prefix (default: 64, --quick 16)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds in which the sides take turns (default: 1)")
    add_run_options(parser, threads_help="intra-op threads (default: 1, stable on a loaded 2-core machine)")
    args = parser.parse_args()

    batch_size = args.batch_size or (4 if args.quick else 8)
    max_new_tokens = args.max_new_tokens or (16 if args.quick else 64)
    min_len, max_len = (32, 48) if args.quick else (60, 100)

    with tempfile.TemporaryDirectory(prefix="benchmark-generation-") as tmp:
        card = prepare_cards(Path(tmp), use_demo=not args.quick)

        import torch

        from fairseq2.models import load_model

        from fairseq2_speechmapper.speech_llm.generation import (
            GeneratedSequence,
            GenerationOptions,
            generate_from_embeddings,
        )
        from fairseq2_speechmapper.speech_llm.uncached_generation import generate_greedy_without_cache

        torch.set_num_threads(args.threads)

        llm = load_model(card, device=torch.device("cpu"), dtype=torch.float32).eval()

        prefixes = make_prefixes(llm, card, batch_size=batch_size, min_len=min_len, max_len=max_len)  # type: ignore[arg-type]

    options = GenerationOptions(max_new_tokens=max_new_tokens)

    def with_cache() -> list[GeneratedSequence]:
        return generate_from_embeddings(llm, prefixes, stop_token_ids=[], options=options)  # type: ignore[arg-type]

    def without_cache() -> list[GeneratedSequence]:
        return generate_greedy_without_cache(llm, prefixes, stop_token_ids=[], max_new_tokens=max_new_tokens)  # type: ignore[arg-type]

    print(
        f"{card}: {batch_size} prefixes of {min(p.size(0) for p in prefixes)}–{max(p.size(0) for p in prefixes)} positions, "
        f"{max_new_tokens} new tokens each, greedy, fp32, {args.threads} thread(s)",
        file=sys.stderr,
    )

    # Warm-up (first-call allocations, kernel selection), untimed.
    generate_from_embeddings(llm, prefixes[:2], stop_token_ids=[], options=GenerationOptions(max_new_tokens=2))  # type: ignore[arg-type]

    best: dict[str, float] = {}

    outputs: dict[str, list[GeneratedSequence]] = {}

    for round_nr in range(args.rounds):
        for side, run in (("KV cache", with_cache), ("no cache", without_cache)):
            start = time.perf_counter()

            outputs[side] = run()

            seconds = time.perf_counter() - start

            best[side] = min(seconds, best.get(side, float("inf")))

            print(f"round {round_nr + 1}: {side}: {seconds:.2f} s", file=sys.stderr)

    num_tokens = sum(len(s.token_ids) for s in outputs["KV cache"])

    assert num_tokens == batch_size * max_new_tokens, "without stop tokens every prefix generates max_new_tokens"

    num_same = sum(a.token_ids == b.token_ids for a, b in zip(outputs["KV cache"], outputs["no cache"]))

    results = [Result(side, num_tokens / seconds, seconds, num_tokens) for side, seconds in best.items()]

    print(f"\n{'side':<10} {'tokens/s':>10} {'seconds':>9} {'tokens':>7}")

    for r in results:
        print(f"{r.side:<10} {r.tokens_per_second:>10.1f} {r.seconds:>9.2f} {r.num_tokens:>7}")

    speedup = results[0].tokens_per_second / results[1].tokens_per_second

    print(
        f"\nKV-cache speed-up: {speedup:.1f}x. Same tokens on both sides: {num_same}/{batch_size} sequences. Load average at the end: {load_average()}."
    )

    write_json(
        args.json,
        {
            "card": card,
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "prefix_lens": [p.size(0) for p in prefixes],
            "threads": args.threads,
            "results": [asdict(r) for r in results],
            "speedup": speedup,
            "num_same_sequences": num_same,
        },
    )

    return 0


if __name__ == "__main__":
    sys.exit(main())
