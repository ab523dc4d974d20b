"""Text generation from per-example input-embedding prefixes with a frozen
fairseq2 :class:`TransformerLM`, using its KV cache.

A speech LLM's prompt is a sequence of input embeddings (chat-template tokens
embedded by the LLM's table, the mapper's vectors spliced in where the audio
goes), of a different length per example. fairseq2's generators take token ids
only, and its beam search cannot start from embeddings, so this module has its
own small loop (greedy, beam search, sampling) on ``llm.decoder`` with an
:class:`IncrementalStateBag`:

- the part of the prefixes that all examples have is fed in one call;
- then every row advances one position per step, fed its own prefix while it
  lasts and its last chosen token after that (incremental input must not be
  padded, so rows cannot simply be right-padded to a common length);
- an example's rows leave the batch (and the cache) as soon as it is done.

``tests/helpers/generation.py`` holds the reference without a cache (the whole
padded batch recomputed every step) that the tests and
``benchmarks/generation.py`` compare against.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import torch
from torch import Tensor
from torch.nn.functional import log_softmax, softmax

from fairseq2.data.tokenizers import Tokenizer
from fairseq2.models.transformer_lm import TransformerLM
from fairseq2.nn import BatchLayout, IncrementalStateBag
from fairseq2.nn.utils.padding import pad_seqs
from fairseq2.utils.validation import ValidationResult

GenerationStrategy = Literal["greedy", "beam", "sample"]

StopReason = Literal["stop", "length"]

_STRATEGIES: Final = ("greedy", "beam", "sample")


@dataclass(kw_only=True)
class GenerationOptions:
    """How text is generated from a prefix."""

    strategy: GenerationStrategy = "greedy"
    """``greedy``, ``beam`` (beam search) or ``sample`` (temperature, top-k, top-p)."""

    max_new_tokens: int = 150
    """The most tokens generated per example, the stop token included (paper: 150)."""

    beam_size: int = 4
    """The hypotheses kept per example (``beam`` only); 1 is greedy."""

    len_penalty: float = 1.0
    """Scores are summed log-probabilities divided by ``num_tokens ** len_penalty``."""

    temperature: float = 1.0
    """Divides the logits before sampling (``sample`` only)."""

    top_p: float = 1.0
    """Samples from the smallest set of tokens whose probability reaches this (``sample`` only)."""

    top_k: int = 0
    """Samples from the ``top_k`` most likely tokens; 0 means all (``sample`` only)."""

    seed: int | None = None
    """Seeds sampling when no ``torch.Generator`` is passed; ``None`` uses torch's global RNG."""

    no_repeat_ngram_size: int = 0
    """Bans any token that would repeat an n-gram of this size in the generated
    text (fairseq's and Hugging Face's option); 0 is off (the paper)."""

    def validate(self) -> ValidationResult:
        result = ValidationResult()

        if self.strategy not in _STRATEGIES:
            result.add_error(f"`strategy` must be one of {', '.join(_STRATEGIES)}, but is {self.strategy!r} instead.")

        if self.max_new_tokens < 1:
            result.add_error(f"`max_new_tokens` must be at least 1, but is {self.max_new_tokens} instead.")

        if self.beam_size < 1:
            result.add_error(f"`beam_size` must be at least 1, but is {self.beam_size} instead.")

        if self.temperature <= 0.0:
            result.add_error(f"`temperature` must be greater than 0, but is {self.temperature} instead.")

        if not 0.0 < self.top_p <= 1.0:
            result.add_error(f"`top_p` must be in (0, 1], but is {self.top_p} instead.")

        if self.top_k < 0:
            result.add_error(f"`top_k` must be 0 (off) or positive, but is {self.top_k} instead.")

        if self.no_repeat_ngram_size < 0:
            result.add_error(
                f"`no_repeat_ngram_size` must be 0 (off) or positive, but is {self.no_repeat_ngram_size} instead."
            )

        return result


@dataclass(kw_only=True)
class GeneratedSequence:
    """The text generated for one example (the best hypothesis for beam search)."""

    token_ids: list[int]
    """The generated tokens, without the prefix and without the stop token."""

    stop_reason: StopReason
    """``stop``: a stop token was generated; ``length``: ``max_new_tokens`` were."""

    score: float
    """The log-probability of the tokens (the stop token included) under the
    model, divided by ``num_tokens ** len_penalty``."""


def generate_from_embeddings(
    llm: TransformerLM,
    prefixes: Sequence[Tensor],
    *,
    stop_token_ids: Collection[int],
    options: GenerationOptions,
    generator: torch.Generator | None = None,
) -> list[GeneratedSequence]:
    """Generates a continuation of each prefix with the LLM's KV cache.

    :param llm: The LLM, in eval mode (fairseq2's attention ignores the cache
        in training mode).
    :param prefixes: The input embeddings of each example. *Shape:* :math:`(P_i,M)`,
        in the LLM's dtype and on its device.
    :param stop_token_ids: The tokens that end a sequence (e.g. the tokenizer's
        end-of-turn token).
    :param generator: The RNG of sampling; else one seeded with ``options.seed``.

    :returns: One sequence per prefix, in order.
    """
    _check_generation_inputs(llm, prefixes, stop_token_ids, options)

    if not prefixes:
        return []

    device = prefixes[0].device

    if options.strategy == "sample" and generator is None and options.seed is not None:
        generator = torch.Generator(device).manual_seed(options.seed)

    beam_size = options.beam_size if options.strategy == "beam" else 1

    stop_ids = torch.tensor(sorted(stop_token_ids), dtype=torch.int64, device=device)

    with torch.inference_mode():
        return _decode(llm, prefixes, stop_ids, options, beam_size, generator)


def generate_from_token_ids(
    llm: TransformerLM,
    prompts: Sequence[Tensor],
    *,
    stop_token_ids: Collection[int],
    options: GenerationOptions,
    generator: torch.Generator | None = None,
) -> list[GeneratedSequence]:
    """Generates a continuation of each token-id prompt (*Shape:* :math:`(P_i)`,
    on the LLM's device) with :func:`generate_from_embeddings`."""
    with torch.inference_mode():
        prefixes = [embed_token_ids(llm, prompt) for prompt in prompts]

    return generate_from_embeddings(llm, prefixes, stop_token_ids=stop_token_ids, options=options, generator=generator)


def generate_text(
    llm: TransformerLM,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    *,
    options: GenerationOptions,
    stop_token_ids: Collection[int] | None = None,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Generates a reply to each text prompt (e.g. for an LLM judge).

    Prompts are encoded as they are, without added control tokens, so a chat
    prompt must already be formatted with the model's template (special tokens
    in the text are recognised). Generation stops at ``stop_token_ids``, by
    default the tokenizer's end-of-sequence token; the replies are decoded
    without special tokens.
    """
    if stop_token_ids is None:
        eos_idx = tokenizer.vocab_info.eos_idx
        if eos_idx is None:
            raise ValueError("The tokenizer has no end-of-sequence token; pass `stop_token_ids`.")

        stop_token_ids = [eos_idx]

    device: torch.device = llm.decoder_frontend.embed.weight.device  # type: ignore[assignment]

    encoder = tokenizer.create_raw_encoder(device=device)
    decoder = tokenizer.create_decoder(skip_special_tokens=True)

    outputs = generate_from_token_ids(
        llm,
        [encoder(prompt) for prompt in prompts],
        stop_token_ids=stop_token_ids,
        options=options,
        generator=generator,
    )

    return [decoder(torch.tensor(output.token_ids, dtype=torch.int64)) for output in outputs]


def embed_token_ids(llm: TransformerLM, token_ids: Tensor) -> Tensor:
    """Embeds ``token_ids`` with the LLM's table, as its frontend does for
    llama and qwen (no scaling, no position encoder: RoPE is in attention)."""
    return llm.decoder_frontend.embed(token_ids)  # type: ignore[no-any-return]


def _check_generation_inputs(
    llm: TransformerLM, prefixes: Sequence[Tensor], stop_token_ids: Collection[int], options: GenerationOptions
) -> None:
    errors = options.validate()
    if errors.has_error():
        raise ValueError(f"The generation options are not valid: {errors}")

    if llm.training:
        raise ValueError(
            "The LLM must be in eval mode (`llm.eval()`): in training mode fairseq2's attention ignores the KV cache and the output is garbage."
        )

    vocab_size = llm.final_proj.output_dim

    if bad_ids := [i for i in stop_token_ids if not 0 <= i < vocab_size]:
        raise ValueError(f"`stop_token_ids` must be in [0, {vocab_size}), but {bad_ids} are not.")

    table = llm.decoder_frontend.embed.weight

    for idx, prefix in enumerate(prefixes):
        if prefix.dim() != 2 or prefix.size(1) != llm.model_dim:
            raise ValueError(
                f"Each prefix must be of shape (length, {llm.model_dim}) (the LLM's model dimension), but prefix {idx} is of shape {tuple(prefix.shape)}."
            )

        if prefix.size(0) == 0:
            raise ValueError(f"Prefix {idx} is empty; generation needs at least one input embedding.")

        if prefix.dtype != table.dtype or prefix.device != table.device:
            raise ValueError(
                f"The prefixes must be in the LLM's dtype and on its device ({table.dtype}, {table.device}), but prefix {idx} is {prefix.dtype} on {prefix.device}."
            )

    if prefixes:
        max_len = max(prefix.size(0) for prefix in prefixes)

        if max_len + options.max_new_tokens > llm.max_seq_len:
            raise ValueError(
                f"The longest prefix ({max_len}) plus `max_new_tokens` ({options.max_new_tokens}) must not exceed the LLM's `max_seq_len` ({llm.max_seq_len})."
            )


def _decode(
    llm: TransformerLM,
    prefixes: Sequence[Tensor],
    stop_ids: Tensor,
    options: GenerationOptions,
    beam_size: int,
    generator: torch.Generator | None,
) -> list[GeneratedSequence]:
    """The loop of :func:`generate_from_embeddings`; greedy is beam search of
    size 1. Rows are grouped by example, ``beam_size`` consecutive rows each;
    ``pos`` is the position whose token is chosen (and then fed)."""
    device = prefixes[0].device

    max_new_tokens = options.max_new_tokens

    # Forced inputs are read from this stack; its padding is never fed.
    padded_prefixes, _ = pad_seqs(prefixes)

    prefix_lens = torch.tensor([prefix.size(0) for prefix in prefixes], device=device)

    min_len, max_len = min(prefix.size(0) for prefix in prefixes), padded_prefixes.size(1)

    state_bag = IncrementalStateBag(max_len + max_new_tokens)

    seqs = padded_prefixes[:, :min_len]

    hidden = llm.decoder(seqs, BatchLayout.of(seqs), state_bag=state_bag)[:, -1]

    state_bag.increment_step_nr(min_len)

    # The rows of an example start as copies of its prefill; only the first one
    # is expanded on its first generation step.
    example_ids = torch.arange(len(prefixes), device=device)

    if beam_size > 1:
        copy_order = example_ids.repeat_interleave(beam_size)

        state_bag.reorder(copy_order)

        hidden = hidden[copy_order]

    # Per row: the summed log-probs and the tokens so far (columns < its step).
    scores = torch.zeros(hidden.size(0), device=device)

    tokens = torch.zeros((hidden.size(0), max_new_tokens), dtype=torch.int64, device=device)

    finished: list[list[GeneratedSequence]] = [[] for _ in prefixes]

    def finish(row_tokens: Tensor, reason: StopReason, log_prob: float, num_scored: int) -> GeneratedSequence:
        return GeneratedSequence(
            token_ids=row_tokens.tolist(), stop_reason=reason, score=log_prob / num_scored**options.len_penalty
        )

    for pos in range(min_len, max_len + max_new_tokens):
        num_examples = example_ids.size(0)

        # Row `r` comes from row `src_rows[r]` of this step; identity unless chosen otherwise.
        src_rows = torch.arange(num_examples * beam_size, device=device).view(num_examples, beam_size)

        next_tokens = torch.zeros((num_examples, beam_size), dtype=torch.int64, device=device)

        next_scores = scores.view(num_examples, beam_size).clone()

        done = torch.zeros(num_examples, dtype=torch.bool, device=device)

        gen = (prefix_lens[example_ids] <= pos).nonzero().squeeze(1)

        if gen.numel() > 0:
            steps = pos - prefix_lens[example_ids[gen]]  # (G): the index of the token chosen

            gen_rows = src_rows[gen].flatten()

            logits = llm.final_proj(hidden[gen_rows]).float()

            if options.no_repeat_ngram_size > 0:
                row_steps = steps.repeat_interleave(beam_size).tolist()

                histories = [tokens[row, :step].tolist() for row, step in zip(gen_rows.tolist(), row_steps)]

                _ban_repeated_ngrams(logits, histories, options.no_repeat_ngram_size)

            row_scores = scores[gen_rows].view(-1, beam_size)

            ending, going_on = _choose(logits, row_scores, steps, stop_ids, options, generator)

            is_stop = torch.isin(ending.tokens, stop_ids) & ending.scores.isfinite()

            # Candidates that go on end a hypothesis at the length limit.
            is_last = (steps + 1 == max_new_tokens).unsqueeze(1) & ~torch.isin(going_on.tokens, stop_ids)

            gen_row_tokens = tokens.view(num_examples, beam_size, -1)[gen]

            for g, k in is_stop.nonzero().tolist():
                ex, step = int(example_ids[gen[g]]), int(steps[g])

                row_tokens = gen_row_tokens[g, ending.beams[g, k], :step]

                finished[ex].append(finish(row_tokens, "stop", float(ending.scores[g, k]), step + 1))

            for g, k in is_last.nonzero().tolist():
                ex, step = int(example_ids[gen[g]]), int(steps[g])

                row_tokens = torch.cat([gen_row_tokens[g, going_on.beams[g, k], :step], going_on.tokens[g, k : k + 1]])

                finished[ex].append(finish(row_tokens, "length", float(going_on.scores[g, k]), step + 1))

            num_finished = torch.tensor([len(finished[ex]) for ex in example_ids[gen].tolist()], device=device)

            done[gen] = (num_finished >= beam_size) | (steps + 1 == max_new_tokens)

            src_rows[gen] = gen.unsqueeze(1) * beam_size + going_on.beams

            next_tokens[gen] = going_on.tokens

            next_scores[gen] = going_on.scores

        keep = ~done

        if not keep.any():
            break

        new_order = src_rows[keep].flatten()

        tokens = tokens[src_rows.flatten()].view(num_examples, beam_size, -1)

        if gen.numel() > 0:
            tokens[gen.unsqueeze(1), torch.arange(beam_size, device=device), steps.unsqueeze(1)] = next_tokens[gen]

        tokens = tokens[keep].flatten(0, 1)

        scores = next_scores[keep].flatten()

        example_ids = example_ids[keep]

        if new_order.size(0) != hidden.size(0) or not torch.equal(
            new_order, torch.arange(hidden.size(0), device=device)
        ):
            state_bag.reorder(new_order)

        # Feed the next position: the prefix while it lasts, else the chosen token.
        row_example_ids = example_ids.repeat_interleave(beam_size)

        is_forced = (prefix_lens[row_example_ids] > pos).unsqueeze(1)

        forced_inputs = padded_prefixes[row_example_ids, min(pos, max_len - 1)]

        token_inputs = embed_token_ids(llm, next_tokens[keep].flatten())

        seqs = torch.where(is_forced, forced_inputs, token_inputs).unsqueeze(1)

        hidden = llm.decoder(seqs, BatchLayout.of(seqs), state_bag=state_bag)[:, -1]

        state_bag.increment_step_nr()

    return [max(hypotheses, key=lambda h: h.score) for hypotheses in finished]


def _ban_repeated_ngrams(logits: Tensor, histories: Sequence[list[int]], ngram_size: int) -> None:
    """Sets to -inf, per row, the logits of the tokens that would complete an
    n-gram already in that row's generated ``history``."""
    for row, history in enumerate(histories):
        prefix = history[len(history) - ngram_size + 1 :] if ngram_size > 1 else []

        banned = [
            history[start + ngram_size - 1]
            for start in range(len(history) - ngram_size + 1)
            if history[start : start + ngram_size - 1] == prefix
        ]

        if banned:
            logits[row, banned] = -torch.inf


@dataclass
class _Candidates:
    """Per generating example, ``K`` extensions of its rows."""

    beams: Tensor
    """The row (of the example's ``beam_size``) extended. *Shape:* :math:`(G,K)`."""

    tokens: Tensor
    """The token it is extended with. *Shape:* :math:`(G,K)`."""

    scores: Tensor
    """The summed log-probs of the row's tokens and this one. *Shape:* :math:`(G,K)`."""


def _choose(
    logits: Tensor,
    row_scores: Tensor,
    steps: Tensor,
    stop_ids: Tensor,
    options: GenerationOptions,
    generator: torch.Generator | None,
) -> tuple[_Candidates, _Candidates]:
    """Returns the candidates that end their hypothesis if they are a stop
    token, and those the rows go on with (``beam_size`` per example).

    :param logits: The next-token logits of the rows of the generating examples.
        *Shape:* :math:`(G \\times B,V)`.
    :param row_scores: The summed log-probs of those rows. *Shape:* :math:`(G,B)`.
    :param steps: The index of the token being chosen, per example. *Shape:* :math:`(G)`.
    """
    num_beams, vocab_size = row_scores.size(1), logits.size(-1)

    lprobs = log_softmax(logits, dim=-1)

    if options.strategy == "sample":
        tokens = _sample(logits, options, generator).unsqueeze(1)

        chosen = _Candidates(
            beams=torch.zeros_like(tokens), tokens=tokens, scores=row_scores + lprobs.gather(1, tokens)
        )

        return chosen, chosen

    ranking = row_scores.unsqueeze(2) + lprobs.view(-1, num_beams, vocab_size)

    # The rows of an example are copies until its first token is chosen.
    ranking[steps == 0, 1:] = -torch.inf

    def best(ranking: Tensor) -> _Candidates:
        scores, idx = ranking.flatten(1).topk(num_beams)

        return _Candidates(beams=idx // vocab_size, tokens=idx % vocab_size, scores=scores)

    # As in fairseq2, a stop token ends a hypothesis only from among the
    # `beam_size` best candidates; the rows go on with the best others.
    ending = best(ranking)

    ranking[:, :, stop_ids] = -torch.inf

    return ending, best(ranking)


def _sample(logits: Tensor, options: GenerationOptions, generator: torch.Generator | None) -> Tensor:
    """Draws one token per row after temperature, top-k and top-p filtering.
    (fairseq2's ``TopKSampler``/``TopPSampler`` do one filter each and take no
    ``torch.Generator``, so sampling could not be seeded per call.)"""
    logits = logits / options.temperature

    if options.top_k > 0:
        kth_best = logits.topk(min(options.top_k, logits.size(-1))).values[:, -1:]

        logits = logits.masked_fill(logits < kth_best, -torch.inf)

    if options.top_p < 1.0:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)

        sorted_probs = softmax(sorted_logits, dim=-1)

        # Drop the tokens after the smallest set whose mass reaches `top_p`;
        # the most likely one always stays.
        sorted_drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= options.top_p

        logits = logits.masked_fill(sorted_drop.scatter(1, sorted_idx, sorted_drop), -torch.inf)

    return torch.multinomial(softmax(logits, dim=-1), num_samples=1, generator=generator).squeeze(1)
