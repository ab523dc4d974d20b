"""The KV-cached generation loop against the no-cache reference and full
forwards, on the tiny llama and qwen cards."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import torch
from torch import Tensor
from torch.nn.functional import log_softmax

from fairseq2.data.tokenizers import load_tokenizer
from fairseq2.models import load_model
from fairseq2.models.transformer_lm import TransformerLM
from fairseq2.nn import BatchLayout

from fairseq2_speechmapper.cli.tiny_assets import TINY_LLAMA_CARD, TINY_QWEN_CARD
from fairseq2_speechmapper.speech_llm.generation import (
    GeneratedSequence,
    GenerationOptions,
    embed_token_ids,
    generate_from_embeddings,
    generate_from_token_ids,
    generate_text,
)
from fairseq2_speechmapper.speech_llm.uncached_generation import generate_greedy_without_cache

# Different lengths, so that rows are forced for a while after the prefill.
PREFIX_LENS = (7, 12, 3, 9, 15)

MAX_NEW_TOKENS = 20

_LLMS: dict[str, TransformerLM] = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, every parallel op of
    these tiny models would otherwise wait for a core (10-100x slower)."""
    num_threads = torch.get_num_threads()

    torch.set_num_threads(1)

    yield

    torch.set_num_threads(num_threads)


def load_chaotic_llm(name: str) -> TransformerLM:
    """The card's LLM with its weights redrawn larger: with the cards' small
    init the LLM repeats one token whatever it is fed, so a wrong position or
    cache entry would go unnoticed; with these it depends on its whole input."""
    if name not in _LLMS:
        llm = load_model(name, device=torch.device("cpu"), dtype=torch.float32)

        assert isinstance(llm, TransformerLM)

        generator = torch.Generator().manual_seed(0)

        with torch.no_grad():
            for param in llm.parameters():
                if param.dim() == 2:
                    param.normal_(0.0, 0.3, generator=generator)

        _LLMS[name] = llm.eval()

    return _LLMS[name]


def make_prefixes(llm: TransformerLM, lens: Sequence[int] = PREFIX_LENS, seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)

    return [torch.randn(n, llm.model_dim, generator=generator) for n in lens]


def score_by_full_forward(
    llm: TransformerLM, prefix: Tensor, seq: GeneratedSequence, stop_id: int, len_penalty: float = 1.0
) -> float:
    """``seq``'s score recomputed by one forward of prefix + tokens."""
    tokens = seq.token_ids + ([stop_id] if seq.stop_reason == "stop" else [])

    with torch.inference_mode():
        seqs = torch.cat([prefix, embed_token_ids(llm, torch.tensor(tokens[:-1], dtype=torch.int64))]).unsqueeze(0)

        lprobs = log_softmax(llm.final_proj(llm.decoder(seqs, BatchLayout.of(seqs))).float(), dim=-1)[0]

    positions = torch.arange(len(tokens)) + prefix.size(0) - 1

    return float(lprobs[positions, torch.tensor(tokens)].sum()) / len(tokens) ** len_penalty


def pick_stop_token(reference: list[GeneratedSequence]) -> int:
    """A token that greedy generates mid-sequence (first at index >= 3) in one
    example, so that stopping at it changes the output."""
    for seq in reference:
        for idx, token in enumerate(seq.token_ids[3:], start=3):
            if token not in seq.token_ids[:idx]:
                return token

    raise AssertionError("Greedy never generated a new token after the third one.")


def assert_same_sequences(actual: list[GeneratedSequence], expected: list[GeneratedSequence]) -> None:
    assert [s.token_ids for s in actual] == [s.token_ids for s in expected]
    assert [s.stop_reason for s in actual] == [s.stop_reason for s in expected]
    assert [s.score for s in actual] == pytest.approx([s.score for s in expected], abs=1e-4)


@pytest.mark.parametrize("name", [TINY_LLAMA_CARD, TINY_QWEN_CARD])
def test_kv_cache_greedy_equals_no_cache_reference(name: str) -> None:
    llm = load_chaotic_llm(name)

    prefixes = make_prefixes(llm)

    unstopped = generate_greedy_without_cache(llm, prefixes, stop_token_ids=[], max_new_tokens=MAX_NEW_TOKENS)

    stop_id = pick_stop_token(unstopped)

    for max_new_tokens in (MAX_NEW_TOKENS, 5):
        expected = generate_greedy_without_cache(llm, prefixes, stop_token_ids=[stop_id], max_new_tokens=max_new_tokens)

        actual = generate_from_embeddings(
            llm, prefixes, stop_token_ids=[stop_id], options=GenerationOptions(max_new_tokens=max_new_tokens)
        )

        assert_same_sequences(actual, expected)

        # The stop token first comes at index >= 3 of some example: it must cut it.
        assert any(seq.stop_reason == "stop" and seq.token_ids for seq in actual) or max_new_tokens < 4

        for seq, full in zip(actual, unstopped):
            if seq.stop_reason == "length":
                assert seq.token_ids == full.token_ids[:max_new_tokens]
            else:
                assert seq.token_ids == full.token_ids[: full.token_ids.index(stop_id)]


def test_stop_token_ends_where_reference_does() -> None:
    llm = load_chaotic_llm(TINY_LLAMA_CARD)

    prefixes = make_prefixes(llm)

    unstopped = generate_greedy_without_cache(llm, prefixes, stop_token_ids=[], max_new_tokens=MAX_NEW_TOKENS)

    stop_id = pick_stop_token(unstopped)

    actual = generate_from_embeddings(
        llm, prefixes, stop_token_ids=[stop_id], options=GenerationOptions(max_new_tokens=MAX_NEW_TOKENS)
    )

    reasons = [seq.stop_reason for seq in actual]

    assert "stop" in reasons and "length" in reasons

    assert all(len(seq.token_ids) == MAX_NEW_TOKENS for seq in actual if seq.stop_reason == "length")

    assert all(stop_id not in seq.token_ids for seq in actual)


def test_batched_greedy_equals_each_example_alone() -> None:
    llm = load_chaotic_llm(TINY_QWEN_CARD)

    prefixes = make_prefixes(llm)

    options = GenerationOptions(max_new_tokens=MAX_NEW_TOKENS)

    batched = generate_from_embeddings(llm, prefixes, stop_token_ids=[], options=options)

    alone = [generate_from_embeddings(llm, [prefix], stop_token_ids=[], options=options)[0] for prefix in prefixes]

    assert_same_sequences(batched, alone)


def test_beam_size_1_equals_greedy() -> None:
    llm = load_chaotic_llm(TINY_LLAMA_CARD)

    prefixes = make_prefixes(llm)

    stop_id = pick_stop_token(
        generate_greedy_without_cache(llm, prefixes, stop_token_ids=[], max_new_tokens=MAX_NEW_TOKENS)
    )

    greedy = generate_from_embeddings(
        llm, prefixes, stop_token_ids=[stop_id], options=GenerationOptions(max_new_tokens=MAX_NEW_TOKENS)
    )

    beam = generate_from_embeddings(
        llm,
        prefixes,
        stop_token_ids=[stop_id],
        options=GenerationOptions(strategy="beam", beam_size=1, max_new_tokens=MAX_NEW_TOKENS),
    )

    assert_same_sequences(beam, greedy)


@pytest.mark.parametrize("name", [TINY_LLAMA_CARD, TINY_QWEN_CARD])
def test_beam_search_scores_above_greedy_and_batched_equals_alone(name: str) -> None:
    llm = load_chaotic_llm(name)

    prefixes = make_prefixes(llm)

    stop_id = pick_stop_token(
        generate_greedy_without_cache(llm, prefixes, stop_token_ids=[], max_new_tokens=MAX_NEW_TOKENS)
    )

    greedy = generate_greedy_without_cache(llm, prefixes, stop_token_ids=[stop_id], max_new_tokens=MAX_NEW_TOKENS)

    options = GenerationOptions(strategy="beam", beam_size=3, max_new_tokens=MAX_NEW_TOKENS)

    beam = generate_from_embeddings(llm, prefixes, stop_token_ids=[stop_id], options=options)

    beam_scores, greedy_scores = [], []

    for prefix, beam_seq, greedy_seq in zip(prefixes, beam, greedy):
        beam_scores.append(score_by_full_forward(llm, prefix, beam_seq, stop_id))

        greedy_scores.append(score_by_full_forward(llm, prefix, greedy_seq, stop_id))

    # The reported scores are the model's; a stop token ends a hypothesis.
    assert [s.score for s in beam] == pytest.approx(beam_scores, abs=1e-4)

    assert all(stop_id not in s.token_ids for s in beam) and any(s.stop_reason == "stop" for s in beam)

    # Beam search does not beat greedy on every example (greedy's path can drop
    # out of the beam and turn out better later: here qwen's third and fifth
    # examples, by 0.015 and 0.005), but does on the whole.
    assert sum(beam_scores) > sum(greedy_scores)

    alone = [
        generate_from_embeddings(llm, [prefix], stop_token_ids=[stop_id], options=options)[0] for prefix in prefixes
    ]

    assert_same_sequences(beam, alone)


def test_beam_as_wide_as_the_vocabulary_finds_the_best_two_tokens() -> None:
    """Exhaustive search: with ``beam_size = V`` and two tokens, beam search
    keeps every first token, so it must find the best of all V + V² endings."""
    llm = load_chaotic_llm(TINY_LLAMA_CARD)

    prefixes = make_prefixes(llm, lens=(4, 9, 6))

    vocab_size = llm.final_proj.output_dim

    def next_lprobs(seqs: Tensor) -> Tensor:
        with torch.inference_mode():
            return log_softmax(llm.final_proj(llm.decoder(seqs, BatchLayout.of(seqs))[:, -1]).float(), dim=-1)

    first_lprobs = [next_lprobs(prefix.unsqueeze(0))[0] for prefix in prefixes]

    # The first example's most likely first token: a one-token ending competes.
    stop_id = int(first_lprobs[0].argmax())

    options = GenerationOptions(strategy="beam", beam_size=vocab_size, max_new_tokens=2, len_penalty=0.5)

    beam = generate_from_embeddings(llm, prefixes, stop_token_ids=[stop_id], options=options)

    for prefix, lprobs, seq in zip(prefixes, first_lprobs, beam):
        with torch.inference_mode():
            first_tokens = embed_token_ids(llm, torch.arange(vocab_size)).unsqueeze(1)

            seqs = torch.cat([prefix.expand(vocab_size, -1, -1), first_tokens], dim=1)

        # (V, V): the score of every two-token ending, normalised by 2 ** 0.5.
        pair_scores = (lprobs.unsqueeze(1) + next_lprobs(seqs)) / 2**0.5

        pair_scores[stop_id] = -torch.inf  # A stop token ends the sequence.

        best_pair = int(pair_scores.argmax())

        if float(lprobs[stop_id]) > float(pair_scores.max()):
            expected = GeneratedSequence(token_ids=[], stop_reason="stop", score=float(lprobs[stop_id]))
        else:
            t1, t2 = divmod(best_pair, vocab_size)

            if t2 == stop_id:
                expected = GeneratedSequence(token_ids=[t1], stop_reason="stop", score=float(pair_scores.max()))
            else:
                expected = GeneratedSequence(token_ids=[t1, t2], stop_reason="length", score=float(pair_scores.max()))

        assert_same_sequences([seq], [expected])

    assert beam[0].stop_reason == "stop" or any(s.stop_reason == "length" for s in beam)


def test_sampling_is_reproducible_with_a_seed() -> None:
    llm = load_chaotic_llm(TINY_LLAMA_CARD)

    prefixes = make_prefixes(llm)

    def sample(**kwargs: object) -> list[list[int]]:
        options = GenerationOptions(strategy="sample", max_new_tokens=MAX_NEW_TOKENS, **kwargs)  # type: ignore[arg-type]

        return [s.token_ids for s in generate_from_embeddings(llm, prefixes, stop_token_ids=[], options=options)]

    first = sample(seed=1, top_p=0.9, temperature=1.2)

    assert sample(seed=1, top_p=0.9, temperature=1.2) == first
    assert sample(seed=2, top_p=0.9, temperature=1.2) != first

    # An explicit generator wins over the seed.
    options = GenerationOptions(strategy="sample", max_new_tokens=MAX_NEW_TOKENS, seed=2, top_p=0.9, temperature=1.2)

    with_generator = generate_from_embeddings(
        llm, prefixes, stop_token_ids=[], options=options, generator=torch.Generator().manual_seed(1)
    )

    assert [s.token_ids for s in with_generator] == first

    greedy = [
        s.token_ids
        for s in generate_from_embeddings(
            llm, prefixes, stop_token_ids=[], options=GenerationOptions(max_new_tokens=MAX_NEW_TOKENS)
        )
    ]

    assert sample(seed=3, top_k=1, temperature=2.0) == greedy
    assert sample(seed=3, top_p=1e-6) == greedy


def test_generate_text_from_a_chat_prompt() -> None:
    llm = load_model(TINY_LLAMA_CARD, device=torch.device("cpu"), dtype=torch.float32).eval()

    assert isinstance(llm, TransformerLM)

    tokenizer = load_tokenizer(TINY_LLAMA_CARD)

    prompts = [
        "<|start_header_id|>user<|end_header_id|>\n\nhello world<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|start_header_id|>user<|end_header_id|>\n\nthe quick brown fox<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ]

    options = GenerationOptions(max_new_tokens=8)

    replies = generate_text(llm, tokenizer, prompts, options=options)

    encoder = tokenizer.create_raw_encoder()

    eos_idx = tokenizer.vocab_info.eos_idx

    assert eos_idx is not None

    expected = generate_from_token_ids(llm, [encoder(p) for p in prompts], stop_token_ids=[eos_idx], options=options)

    decoder = tokenizer.create_decoder(skip_special_tokens=True)

    assert replies == [decoder(torch.tensor(s.token_ids, dtype=torch.int64)) for s in expected]


def test_clear_errors() -> None:
    llm = load_chaotic_llm(TINY_LLAMA_CARD)

    options = GenerationOptions(max_new_tokens=4)

    prefix = torch.randn(3, llm.model_dim)

    with pytest.raises(ValueError, match="eval mode"):
        llm.train()
        try:
            generate_from_embeddings(llm, [prefix], stop_token_ids=[], options=options)
        finally:
            llm.eval()

    with pytest.raises(ValueError, match=r"shape \(length, 64\).*prefix 1 is of shape \(3, 32\)"):
        generate_from_embeddings(llm, [prefix, torch.randn(3, 32)], stop_token_ids=[], options=options)

    with pytest.raises(ValueError, match="Prefix 0 is empty"):
        generate_from_embeddings(llm, [prefix[:0]], stop_token_ids=[], options=options)

    with pytest.raises(ValueError, match="max_seq_len"):
        generate_from_embeddings(
            llm, [prefix], stop_token_ids=[], options=GenerationOptions(max_new_tokens=llm.max_seq_len)
        )

    with pytest.raises(ValueError, match="dtype"):
        generate_from_embeddings(llm, [prefix.double()], stop_token_ids=[], options=options)

    with pytest.raises(ValueError, match="stop_token_ids"):
        generate_from_embeddings(llm, [prefix], stop_token_ids=[10_000], options=options)

    with pytest.raises(ValueError, match="top_p"):
        generate_from_embeddings(
            llm, [prefix], stop_token_ids=[], options=GenerationOptions(strategy="sample", top_p=0.0)
        )

    assert generate_from_embeddings(llm, [], stop_token_ids=[], options=options) == []


def _repeated_ngrams(token_ids: list[int], ngram_size: int) -> int:
    ngrams = [tuple(token_ids[i : i + ngram_size]) for i in range(len(token_ids) - ngram_size + 1)]

    return len(ngrams) - len(set(ngrams))


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_no_repeat_ngram_size_bans_repeated_ngrams(strategy: str) -> None:
    llm = load_chaotic_llm(TINY_LLAMA_CARD)

    prefixes = make_prefixes(llm)

    def generate(no_repeat_ngram_size: int) -> list[GeneratedSequence]:
        options = GenerationOptions(
            strategy=strategy, beam_size=2, max_new_tokens=48, no_repeat_ngram_size=no_repeat_ngram_size
        )

        return generate_from_embeddings(llm, prefixes, stop_token_ids=[], options=options)

    # Left to itself, the chaotic model repeats itself: the option has work to do.
    assert sum(_repeated_ngrams(seq.token_ids, 2) for seq in generate(0)) > 0

    assert [_repeated_ngrams(seq.token_ids, 2) for seq in generate(2)] == [0] * len(prefixes)
