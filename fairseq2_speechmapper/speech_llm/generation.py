"""Text generation from per-example input-embedding prefixes with a frozen
fairseq2 :class:`TransformerLM`, using its KV cache.

A speech LLM's prompt is a sequence of input embeddings (chat-template tokens
embedded by the LLM's table, the mapper's vectors spliced in where the audio
goes), of a different length per example. fairseq2's generators take token ids
only, and its beam search cannot start from embeddings, so this module has its
own small loop (greedy, beam search, sampling) on ``llm.decoder`` with an
:class:`IncrementalStateBag`, shaped as fairseq2's generators are: a decoding
state (tokens, scores, example ids, the cache's row order) that is prefilled,
stepped and finished:

- the part of the prefixes that all examples have is fed in one call;
- then every row advances one position per step, fed its own prefix while it
  lasts and its last chosen token after that (incremental input must not be
  padded, so rows cannot simply be right-padded to a common length);
- an example's rows leave the batch (and the cache) as soon as it is done.

:mod:`.uncached_generation` holds the reference without a cache (the whole
padded batch recomputed every step) that the tests and
``benchmarks/generation.py`` compare against.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final, Literal, final

import torch
from torch import Tensor
from torch.nn.functional import log_softmax, pad, softmax

from fairseq2.data.tokenizers import Tokenizer
from fairseq2.generation.step_processor import NGramRepeatBlockProcessor
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
    size 1."""
    state = _DecodingState(llm, prefixes, stop_ids, options, beam_size, generator)

    state.prefill()

    while state.step():
        pass

    return state.finish()


@dataclass
class _StepChoice:
    """What a step chose for the examples still in the batch (``E`` of them)."""

    src_rows: Tensor
    """The row of this step each row continues. *Shape:* :math:`(E,B)`."""

    tokens: Tensor
    """The token each row is extended with (0 where it is still fed its
    prefix). *Shape:* :math:`(E,B)`."""

    scores: Tensor
    """The summed log-probs of each row's tokens. *Shape:* :math:`(E,B)`."""

    done: Tensor
    """Whether the example has finished. *Shape:* :math:`(E)`."""

    generating: Tensor
    """The examples past their prefix. *Shape:* :math:`(G)`."""

    steps: Tensor
    """The index of the token they chose. *Shape:* :math:`(G)`."""


@final
class _DecodingState:
    """The rows being decoded (``beam_size`` consecutive rows per example not
    yet done), their tokens and scores, the KV cache, and the hypotheses each
    example has finished.

    ``pos`` is the position whose token is chosen next and then fed: a row is
    fed its own prefix while ``pos`` is inside it, and generates after that."""

    def __init__(
        self,
        llm: TransformerLM,
        prefixes: Sequence[Tensor],
        stop_ids: Tensor,
        options: GenerationOptions,
        beam_size: int,
        generator: torch.Generator | None,
    ) -> None:
        self._llm = llm
        self._stop_ids = stop_ids
        self._options = options
        self._beam_size = beam_size
        self._generator = generator

        self._device = prefixes[0].device

        self._ngram_blocker = (
            NGramRepeatBlockProcessor(options.no_repeat_ngram_size) if options.no_repeat_ngram_size > 0 else None
        )

        # Forced inputs are read from this stack; its padding is never fed.
        self._padded_prefixes, _ = pad_seqs(prefixes)

        self._prefix_lens = torch.tensor([prefix.size(0) for prefix in prefixes], device=self._device)

        self._min_len = min(prefix.size(0) for prefix in prefixes)

        self._state_bag = IncrementalStateBag(self._padded_prefixes.size(1) + options.max_new_tokens)

        self._pos = self._min_len

        self._example_ids = torch.arange(len(prefixes), device=self._device)

        num_rows = len(prefixes) * beam_size

        # Per row: the summed log-probs and the tokens so far (columns < its step).
        self._scores = torch.zeros(num_rows, device=self._device)

        self._tokens = torch.zeros((num_rows, options.max_new_tokens), dtype=torch.int64, device=self._device)

        # The last hidden state of each row; set by `prefill()`.
        self._hidden = torch.empty(())

        self._finished: list[list[GeneratedSequence]] = [[] for _ in prefixes]

    def prefill(self) -> None:
        """Feeds the part of the prefixes that all examples have, in one call."""
        seqs = self._padded_prefixes[:, : self._min_len]

        hidden = self._llm.decoder(seqs, BatchLayout.of(seqs), state_bag=self._state_bag)[:, -1]

        self._state_bag.increment_step_nr(self._min_len)

        # The rows of an example start as copies of its prefill; only the first
        # one is expanded on its first generation step.
        if self._beam_size > 1:
            copy_order = self._example_ids.repeat_interleave(self._beam_size)

            self._state_bag.reorder(copy_order)

            hidden = hidden[copy_order]

        self._hidden = hidden

    def step(self) -> bool:
        """Chooses the tokens of ``pos``, drops the examples that are done and
        feeds ``pos``; returns whether any example goes on."""
        choice = self._choose_step()

        keep = ~choice.done

        if not keep.any():
            return False

        self._reorder(choice, keep)

        self._feed(choice.tokens[keep].flatten())

        return True

    def finish(self) -> list[GeneratedSequence]:
        """The best hypothesis of each example, in order."""
        return [max(hypotheses, key=lambda h: h.score) for hypotheses in self._finished]

    def _choose_step(self) -> _StepChoice:
        num_examples, beam_size = self._example_ids.size(0), self._beam_size

        # Row `r` comes from row `src_rows[r]` of this step; identity unless chosen otherwise.
        src_rows = torch.arange(num_examples * beam_size, device=self._device).view(num_examples, beam_size)

        tokens = torch.zeros((num_examples, beam_size), dtype=torch.int64, device=self._device)

        scores = self._scores.view(num_examples, beam_size).clone()

        done = torch.zeros(num_examples, dtype=torch.bool, device=self._device)

        generating = (self._prefix_lens[self._example_ids] <= self._pos).nonzero().squeeze(1)

        steps = self._pos - self._prefix_lens[self._example_ids[generating]]

        if generating.numel() > 0:
            going_on, done[generating] = self._extend(generating, src_rows[generating].flatten(), steps)

            src_rows[generating] = generating.unsqueeze(1) * beam_size + going_on.beams

            tokens[generating] = going_on.tokens

            scores[generating] = going_on.scores

        return _StepChoice(
            src_rows=src_rows, tokens=tokens, scores=scores, done=done, generating=generating, steps=steps
        )

    def _extend(self, generating: Tensor, rows: Tensor, steps: Tensor) -> tuple[_Candidates, Tensor]:
        """Chooses how the ``rows`` of the ``generating`` examples go on and
        records the hypotheses that end; returns the candidates the rows go on
        with and which of these examples are done."""
        logits = self._llm.final_proj(self._hidden[rows]).float()

        if self._ngram_blocker is not None:
            logits = self._block_repeated_ngrams(logits, rows, steps)

        row_scores = self._scores[rows].view(-1, self._beam_size)

        ending, going_on = _choose(logits, row_scores, steps, self._stop_ids, self._options, self._generator)

        self._record_hypotheses(generating, steps, ending, going_on)

        num_finished = [len(self._finished[ex]) for ex in self._example_ids[generating].tolist()]

        is_last = steps + 1 == self._options.max_new_tokens

        return going_on, (torch.tensor(num_finished, device=self._device) >= self._beam_size) | is_last

    def _block_repeated_ngrams(self, logits: Tensor, rows: Tensor, steps: Tensor) -> Tensor:
        """Bans, through fairseq2's processor, the tokens that would repeat an
        n-gram of a row's generated tokens: all rows in one batch, no token
        list copied to the host (the processor's boolean indexing still waits
        for the device on CUDA)."""
        assert self._ngram_blocker is not None

        vocab_size = logits.size(1)

        # The rows' histories right-aligned in one batch: the columns before a
        # row's first token hold ids past the vocabulary, a different one each,
        # so that they match no n-gram; their bans land in extra logits.
        width = min(self._pos - self._min_len, self._options.max_new_tokens - 1)

        columns = torch.arange(width, device=self._device)

        src_columns = columns - width + steps.repeat_interleave(self._beam_size).unsqueeze(1)

        histories = self._tokens[rows].gather(1, src_columns.clamp(min=0))

        histories = torch.where(src_columns >= 0, histories, vocab_size + columns)

        padded_logits = pad(logits, (0, width))

        self._ngram_blocker(histories, padded_logits, lprob=True)

        return padded_logits[:, :vocab_size]

    def _record_hypotheses(self, generating: Tensor, steps: Tensor, ending: _Candidates, going_on: _Candidates) -> None:
        """Records the hypotheses a stop token ends, and those that reach
        ``max_new_tokens``."""
        is_stop = torch.isin(ending.tokens, self._stop_ids) & ending.scores.isfinite()

        # Candidates that go on end a hypothesis at the length limit.
        is_last = (steps + 1 == self._options.max_new_tokens).unsqueeze(1) & ~torch.isin(
            going_on.tokens, self._stop_ids
        )

        row_tokens = self._tokens.view(-1, self._beam_size, self._options.max_new_tokens)[generating]

        ends: tuple[tuple[_Candidates, Tensor, StopReason], ...] = (
            (ending, is_stop, "stop"),
            (going_on, is_last, "length"),
        )

        for candidates, is_end, reason in ends:
            for g, k in is_end.nonzero().tolist():
                step = int(steps[g])

                tokens = row_tokens[g, candidates.beams[g, k], :step]

                if reason == "length":
                    tokens = torch.cat([tokens, candidates.tokens[g, k : k + 1]])

                score = float(candidates.scores[g, k]) / (step + 1) ** self._options.len_penalty

                self._finished[int(self._example_ids[generating[g]])].append(
                    GeneratedSequence(token_ids=tokens.tolist(), stop_reason=reason, score=score)
                )

    def _reorder(self, choice: _StepChoice, keep: Tensor) -> None:
        """Moves the rows as chosen (tokens, scores, KV cache) and drops the
        examples that are done."""
        num_examples, beam_size = choice.done.size(0), self._beam_size

        tokens = self._tokens[choice.src_rows.flatten()].view(num_examples, beam_size, -1)

        if choice.generating.numel() > 0:
            beams = torch.arange(beam_size, device=self._device)

            tokens[choice.generating.unsqueeze(1), beams, choice.steps.unsqueeze(1)] = choice.tokens[choice.generating]

        self._tokens = tokens[keep].flatten(0, 1)

        self._scores = choice.scores[keep].flatten()

        self._example_ids = self._example_ids[keep]

        new_order = choice.src_rows[keep].flatten()

        num_rows = self._hidden.size(0)

        if new_order.size(0) != num_rows or not torch.equal(new_order, torch.arange(num_rows, device=self._device)):
            self._state_bag.reorder(new_order)

    def _feed(self, chosen_tokens: Tensor) -> None:
        """Feeds ``pos``: each row's prefix while it lasts, else its chosen token."""
        row_example_ids = self._example_ids.repeat_interleave(self._beam_size)

        is_forced = (self._prefix_lens[row_example_ids] > self._pos).unsqueeze(1)

        forced_inputs = self._padded_prefixes[row_example_ids, min(self._pos, self._padded_prefixes.size(1) - 1)]

        token_inputs = embed_token_ids(self._llm, chosen_tokens)

        seqs = torch.where(is_forced, forced_inputs, token_inputs).unsqueeze(1)

        self._hidden = self._llm.decoder(seqs, BatchLayout.of(seqs), state_bag=self._state_bag)[:, -1]

        self._state_bag.increment_step_nr()

        self._pos += 1


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
