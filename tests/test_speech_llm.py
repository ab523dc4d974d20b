"""The speech LLM on the tiny cards: the chat-template splice, teacher-forced
response logits (padding-invariant, at exactly the response positions), the
stage-2 loss, and the compatibility checks of a mapper and an LLM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from fairseq2.assets import get_asset_store
from fairseq2.data.tokenizers import Tokenizer, load_tokenizer
from fairseq2.models import load_model
from fairseq2.nn import BatchLayout

from fairseq2_speechmapper.cli.tiny_assets import (
    TINY_LLAMA_CARD,
    TINY_MAPPER_CARD,
    TINY_MAPPER_QWEN_CARD,
    TINY_QWEN_CARD,
)
from fairseq2_speechmapper.models.speechmapper import SpeechMapper
from fairseq2_speechmapper.recipes.instruct.criterion import InstructLoss
from fairseq2_speechmapper.speech_llm import (
    ChatTemplate,
    ChatTemplateError,
    MappedSpeech,
    SpeechLLM,
    SpeechLLMSection,
    SpeechLLMSetupError,
    SpeechTaskSection,
    TaskDataError,
    build_task_example,
    load_speech_llm,
)
from fairseq2_speechmapper.stage1 import (
    Stage1LossSection,
    build_embedding_targets,
    create_stage1_loss,
)

CPU = torch.device("cpu")

TRANSCRIPTS = ["hello world", "the cat sat on the mat", "good"]

TOKENIZERS: dict[int, Tokenizer] = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def load_tiny_speech_llm(mapper_card: str, **section_fields: object) -> SpeechLLM:
    """The speech LLM of a tiny mapper card; its tokenizer is :data:`TOKENIZERS`'s."""
    mapper = load_model(mapper_card, device=CPU, dtype=torch.float32)
    assert isinstance(mapper, SpeechMapper)

    model, tokenizer, _ = load_speech_llm(
        get_asset_store().retrieve_card(mapper_card),
        SpeechLLMSection(**section_fields),  # type: ignore[arg-type]
        mapper=mapper,
        unwrapped_mapper=mapper,
        device=CPU,
    )

    # With the cards' small initialisation the LLM's output hardly depends on
    # its input; larger weights make a wrong position or pad show.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.llm.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.3, generator=generator)

    TOKENIZERS[id(model)] = tokenizer

    return model


@pytest.fixture(scope="module", params=[TINY_MAPPER_CARD, TINY_MAPPER_QWEN_CARD])
def speech_llm(request: pytest.FixtureRequest) -> SpeechLLM:
    return load_tiny_speech_llm(request.param)


def encode(model: SpeechLLM, text: str) -> Tensor:
    return TOKENIZERS[id(model)].create_raw_encoder()(text).to(torch.int64)


def transcript_as_speech(model: SpeechLLM, transcripts: list[str]) -> tuple[MappedSpeech, list[Tensor]]:
    """The transcripts' own token embeddings in place of the mapper's output."""
    ids = [encode(model, t) for t in transcripts]

    embeddings = [model.embed_tokens(i) for i in ids]

    outputs = torch.zeros((len(ids), max(e.size(0) for e in embeddings), embeddings[0].size(1)))
    for row, e in enumerate(embeddings):
        outputs[row, : e.size(0)] = e

    return MappedSpeech(outputs=outputs, lens=[e.size(0) for e in embeddings]), ids


def test_splicing_the_transcript_embeddings_gives_the_text_prompt(speech_llm: SpeechLLM) -> None:
    template = speech_llm.chat_template

    instruction = "Transcribe the audio."

    speech, _ = transcript_as_speech(speech_llm, TRANSCRIPTS)

    prefixes = speech_llm.build_prefixes(speech, [template.speech_prompt(instruction)] * len(TRANSCRIPTS))

    for transcript, prefix in zip(TRANSCRIPTS, prefixes):
        # The same user turn written as text, the transcript where the audio was.
        text_ids = encode(speech_llm, template.text_prompt(f"{transcript}\n{instruction}"))

        assert torch.equal(prefix, speech_llm.embed_tokens(text_ids))


def test_audio_placeholder_puts_the_speech_inside_the_instruction(speech_llm: SpeechLLM) -> None:
    template = speech_llm.chat_template

    speech, _ = transcript_as_speech(speech_llm, ["hello world"])

    [prefix] = speech_llm.build_prefixes(speech, [template.speech_prompt("Listen: <audio> Now transcribe it.")])

    text_ids = encode(speech_llm, template.text_prompt("Listen: hello world Now transcribe it."))

    assert torch.equal(prefix, speech_llm.embed_tokens(text_ids))


def test_response_logits_are_the_llm_logits_at_the_response_positions(speech_llm: SpeechLLM) -> None:
    template = speech_llm.chat_template

    prompt = template.speech_prompt("Transcribe the audio.")

    speech, transcript_ids = transcript_as_speech(speech_llm, TRANSCRIPTS)

    prefixes = speech_llm.build_prefixes(speech, [prompt] * len(TRANSCRIPTS))

    responses = [template.response_ids(t) for t in TRANSCRIPTS]

    with torch.no_grad():
        result = speech_llm.response_logits(prefixes, responses)

    # The targets are exactly the response tokens and the end of turn, nothing
    # of the instruction or the speech.
    assert result.response_lens == [r.numel() for r in responses]
    assert torch.equal(result.targets, torch.cat(responses))
    assert all(int(r[-1]) in template.stop_token_ids for r in responses)

    offset = 0
    for i, response in enumerate(responses):
        full_ids = torch.cat([prompt.before_ids, transcript_ids[i], prompt.after_ids, response])

        with torch.no_grad():
            llm = speech_llm.llm
            seqs = llm.decoder_frontend.embed(full_ids[None])
            full_logits = llm.final_proj(llm.decoder(seqs, BatchLayout.of(seqs)))[0]

        # Position t predicts token t + 1: the response's logits start one
        # before its first token.
        first = full_ids.numel() - response.numel() - 1
        expected = full_logits[first : first + response.numel()]

        torch.testing.assert_close(result.logits[offset : offset + response.numel()], expected, atol=1e-4, rtol=1e-4)

        offset += response.numel()


def test_padded_batch_gives_each_example_its_unpadded_logits(speech_llm: SpeechLLM) -> None:
    template = speech_llm.chat_template

    generator = torch.Generator().manual_seed(1)

    lens = [3, 11, 6]

    speech = MappedSpeech(
        outputs=torch.randn(3, max(lens), speech_llm.embedding_table.size(1), generator=generator), lens=lens
    )

    prompts = [
        template.speech_prompt(w) for w in ("Transcribe the audio.", "Convert this speech into text.", "Repeat it.")
    ]

    prefixes = speech_llm.build_prefixes(speech, prompts)

    responses = [template.response_ids(t) for t in TRANSCRIPTS]

    with torch.no_grad():
        batched = speech_llm.response_logits(prefixes, responses).logits

        alone = torch.cat([speech_llm.response_logits([p], [r]).logits for p, r in zip(prefixes, responses)])

    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)


def test_stage2_loss_is_response_cross_entropy_plus_sigma_stage1(speech_llm: SpeechLLM) -> None:
    template = speech_llm.chat_template

    generator = torch.Generator().manual_seed(2)

    transcript_ids = [encode(speech_llm, t) for t in TRANSCRIPTS]

    lens = [ids.numel() + 4 for ids in transcript_ids]

    outputs = torch.randn(3, max(lens), speech_llm.embedding_table.size(1), generator=generator, requires_grad=True)

    prefixes = speech_llm.build_prefixes(
        MappedSpeech(outputs=outputs, lens=lens), [template.speech_prompt("Transcribe the audio.")] * 3
    )

    response = speech_llm.response_logits(prefixes, [template.response_ids(t) for t in TRANSCRIPTS])

    stage1_loss = create_stage1_loss(Stage1LossSection())

    targets = build_embedding_targets(transcript_ids, lens, speech_llm.embedding_table.detach(), pad_idx=0)

    ce_only = InstructLoss(sigma=0.0, stage1_loss=stage1_loss)(response)

    num_tokens = response.targets.numel()

    expected_ce = torch.nn.functional.cross_entropy(response.logits, response.targets, reduction="sum")

    torch.testing.assert_close(ce_only.loss, expected_ce)
    assert ce_only.num_response_tokens == num_tokens

    mixed = InstructLoss(sigma=0.9, stage1_loss=stage1_loss)(response, outputs, targets)

    stage1_mean = stage1_loss(outputs, targets).loss.mean()

    # Returned as a sum over response tokens (the trainer divides by their number).
    torch.testing.assert_close(mixed.loss / num_tokens, 0.1 * expected_ce / num_tokens + 0.9 * stage1_mean)

    # The gradient reaches the mapper's output through the frozen LLM.
    mixed.loss.backward()
    assert outputs.grad is not None and outputs.grad.abs().sum() > 0
    assert all(p.grad is None for p in speech_llm.llm.parameters())


def test_mapper_pretrained_for_another_llm_is_refused() -> None:
    with pytest.raises(SpeechLLMSetupError, match=f"pretrained against the embeddings of `{TINY_LLAMA_CARD}`"):
        load_tiny_speech_llm(TINY_MAPPER_CARD, llm=TINY_QWEN_CARD)


def test_mapper_is_refused_by_embeddings_not_names() -> None:
    # Both tiny LLMs embed into 64 dimensions: only their tables tell them apart.
    load_tiny_speech_llm(TINY_MAPPER_QWEN_CARD, llm=TINY_QWEN_CARD)

    with pytest.raises(SpeechLLMSetupError, match="has other embeddings"):
        load_tiny_speech_llm(TINY_MAPPER_QWEN_CARD, llm=TINY_LLAMA_CARD)


@pytest.mark.parametrize(("llm", "end_of_turn"), [(TINY_LLAMA_CARD, "<|eot_id|>"), (TINY_QWEN_CARD, "<|im_end|>")])
def test_chat_template_ends_responses_with_the_end_of_turn_token(llm: str, end_of_turn: str) -> None:
    tokenizer = load_tokenizer(llm)

    template = ChatTemplate(tokenizer, llm_name=llm)

    decoder = tokenizer.create_decoder(skip_special_tokens=False)

    assert decoder(template.response_ids("hello world")) == f"hello world{end_of_turn}"

    assert template.stop_token_ids == {int(template.end_of_turn_ids[0]), tokenizer.vocab_info.eos_idx}

    prompt = template.speech_prompt("Transcribe the audio.")

    assert decoder(prompt.after_ids).endswith("\n") and "Transcribe the audio." in decoder(prompt.after_ids)


def test_chat_template_override_and_system_prompt() -> None:
    tokenizer = load_tokenizer(TINY_QWEN_CARD)

    template = ChatTemplate(
        tokenizer,
        llm_name=TINY_QWEN_CARD,
        template="{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        system_prompt="Be brief.",
    )

    decoder = tokenizer.create_decoder(skip_special_tokens=False)

    prompt = template.speech_prompt("Transcribe.")

    assert decoder(prompt.before_ids) == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"

    with pytest.raises(ChatTemplateError, match="ends the assistant's turn with nothing"):
        ChatTemplate(tokenizer, llm_name="x", template="{% for m in messages %}{{ m['content'] }}{% endfor %}")


def test_task_examples_take_translation_and_answers_from_the_manifest() -> None:
    section = SpeechTaskSection()

    st = build_task_example(section, "st", "hello", {"translation": "hallo", "tgt_lang": "de"}, source="m.jsonl:3")

    assert st.instruction == "Translate the audio into German."
    assert (st.response, st.target_language) == ("hallo", "de")

    sqa = build_task_example(section, "sqa", "t", {"question": "Who?", "answers": ["Ann", "Anne"]}, source="m.jsonl:4")

    assert sqa.instruction == "Listen to the audio and answer the question: Who?"
    assert sqa.references == ["Ann", "Anne"]

    with pytest.raises(TaskDataError, match=r"^m\.jsonl:5: the `translation` field is missing or empty\.$"):
        build_task_example(section, "st", "hello", {"tgt_lang": "de"}, source="m.jsonl:5")

    with pytest.raises(TaskDataError, match=r"^m\.jsonl:6: no `tgt_lang` field"):
        build_task_example(section, "st", "hello", {"translation": "hallo"}, source="m.jsonl:6")


def test_tokenizers_without_a_template_get_llama3s() -> None:
    """Meta's tiktoken Llama 3 tokenizer has no chat template: the built-in
    one must give what the Hugging Face Llama 3 template gives."""
    tokenizer = load_tokenizer(TINY_LLAMA_CARD)

    class TemplatelessEncoder:
        def __init__(self) -> None:
            self._encoder = tokenizer.create_raw_encoder()

        def __call__(self, text: str) -> Tensor:
            return self._encoder(text)

    class TemplatelessTokenizer:
        vocab_info = tokenizer.vocab_info

        def create_raw_encoder(self) -> TemplatelessEncoder:
            return TemplatelessEncoder()

        def create_decoder(self, *, skip_special_tokens: bool = False):  # type: ignore[no-untyped-def]
            return tokenizer.create_decoder(skip_special_tokens=skip_special_tokens)

    own = ChatTemplate(tokenizer, llm_name=TINY_LLAMA_CARD)
    builtin = ChatTemplate(TemplatelessTokenizer(), llm_name="tiktoken")  # type: ignore[arg-type]

    own_prompt, builtin_prompt = own.speech_prompt("Transcribe."), builtin.speech_prompt("Transcribe.")

    assert torch.equal(own_prompt.before_ids, builtin_prompt.before_ids)
    assert torch.equal(own_prompt.after_ids, builtin_prompt.after_ids)
    assert torch.equal(own.response_ids("hi"), builtin.response_ids("hi"))


def test_lora_adapters_start_neutral_and_then_steer_the_llm_also_under_the_kv_cache() -> None:
    from fairseq2_speechmapper.speech_llm.generation import (
        GenerationOptions,
        generate_from_embeddings,
    )
    from fairseq2_speechmapper.speech_llm.loader import add_llm_lora
    from fairseq2_speechmapper.speech_llm.uncached_generation import generate_greedy_without_cache

    model = load_tiny_speech_llm(TINY_MAPPER_CARD)

    mapper = model.mapper
    assert isinstance(mapper, SpeechMapper)

    template = model.chat_template

    speech, _ = transcript_as_speech(model, TRANSCRIPTS)

    prefixes = model.build_prefixes(speech, [template.speech_prompt("Transcribe the audio.")] * len(TRANSCRIPTS))

    responses = [template.response_ids(t) for t in TRANSCRIPTS]

    with torch.no_grad():
        before = model.response_logits(prefixes, responses).logits

    config = add_llm_lora(mapper, model.llm, rank=4, alpha=8.0, dropout_p=0.0)

    assert (config.num_layers, config.model_dim) == (len(model.llm.decoder.layers), 64)

    # B starts at zero: attaching changes nothing.
    with torch.no_grad():
        torch.testing.assert_close(model.response_logits(prefixes, responses).logits, before)

    assert mapper.llm_lora is not None

    with torch.no_grad():
        for up in (*mapper.llm_lora.q_up, *mapper.llm_lora.v_up):
            up.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(3))

    # Gradients reach the adapters, not the LLM.
    loss = model.response_logits(prefixes, responses).logits.logsumexp(-1).sum()
    loss.backward()

    assert all(p.grad is not None for p in mapper.llm_lora.parameters())
    assert all(p.grad is None for p in model.llm.parameters())

    with torch.no_grad():
        assert not torch.allclose(model.response_logits(prefixes, responses).logits, before, atol=1e-3)

        detached = [p.detach() for p in prefixes]

        cached = generate_from_embeddings(
            model.llm, detached, stop_token_ids=template.stop_token_ids, options=GenerationOptions(max_new_tokens=12)
        )

        reference = generate_greedy_without_cache(
            model.llm, detached, stop_token_ids=template.stop_token_ids, max_new_tokens=12
        )

    assert [c.token_ids for c in cached] == [r.token_ids for r in reference]
