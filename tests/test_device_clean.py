"""The training hot path is ready for an accelerator, checked on CPU:

- no host synchronisation in a stage-1 or stage-2 step (mapper forward, targets,
  losses, metrics, backward): the device tensors live on the ``meta`` device,
  where reading a value back (``item``, ``int``, ``tolist``, boolean indexing,
  ``nonzero``) raises, as it would stall a GPU step;
- a stage-1 and a stage-2 step under bf16 autocast, as fairseq2's trainer runs
  ``trainer.mixed_precision``: finite float32 losses near the float32 step's,
  gradients on the mapper;
- ``compile_speechmapper`` on CPU: two lengths in a row, the eager outputs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from fairseq2.assets import get_asset_store
from fairseq2.metrics import MetricBag
from fairseq2.models import load_model
from fairseq2.nn import BatchLayout
from fairseq2.recipe.config import CompileOptions

from fairseq2_speechmapper.cli.tiny_assets import TINY_MAPPER_CARD
from fairseq2_speechmapper.datasets import SpeechBatch
from fairseq2_speechmapper.features.reader import CachedFeatureEncoder
from fairseq2_speechmapper.models.speechmapper import SpeechMapper, compile_speechmapper, get_speechmapper_model_hub
from fairseq2_speechmapper.recipes.instruct.criterion import InstructLoss, InstructLossOutput
from fairseq2_speechmapper.recipes.instruct.units import add_instruct_metrics, update_instruct_metrics
from fairseq2_speechmapper.speech_llm import SpeechLLM, SpeechLLMSection, load_speech_llm
from fairseq2_speechmapper.stage1 import (
    Stage1LossSection,
    add_stage1_loss_metrics,
    build_embedding_targets,
    create_stage1_loss,
    sum_kept_loss,
    update_stage1_loss_metrics,
)

CPU = torch.device("cpu")
META = torch.device("meta")

# Two utterances of different lengths (frames), one with a transcript too long
# for its output (skipped and counted), as real batches have.
INPUT_LENS = [60, 45]
TRANSCRIPT_IDS = [torch.tensor([5, 6, 7]), torch.arange(10, 22)]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def tiny_mapper(*, num_blocks: int = 2) -> SpeechMapper:
    hub = get_speechmapper_model_hub()

    config = hub.get_arch_config("tiny")

    config.blocks = config.blocks[:num_blocks]

    torch.manual_seed(0)

    return hub.create_new_model(config, device=CPU)


def features_of(mapper: SpeechMapper, device: torch.device) -> tuple[Tensor, BatchLayout]:
    generator = torch.Generator().manual_seed(1)

    features = torch.randn(len(INPUT_LENS), max(INPUT_LENS), mapper.input_dim, generator=generator).to(device)

    return features, BatchLayout.of(features, INPUT_LENS)


def stage1_step(mapper: SpeechMapper, embedding_table: Tensor, *, autocast: bool = False) -> Tensor:
    """The pretrain unit's step (mapper, targets, loss, metrics), then backward;
    returns the summed loss of the kept utterances."""
    features, layout = features_of(mapper, embedding_table.device)

    loss_fn = create_stage1_loss(Stage1LossSection())

    bag = MetricBag(device=embedding_table.device)
    add_stage1_loss_metrics(bag)

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        outputs, outputs_layout = mapper(features, layout)

        targets = build_embedding_targets(TRANSCRIPT_IDS, list(outputs_layout.seq_lens), embedding_table, pad_idx=0)

        output = loss_fn(outputs, targets)

        update_stage1_loss_metrics(bag, output, outputs, targets, num_bad_samples=0)

        loss, num_kept = sum_kept_loss(output, targets)

    assert (num_kept, targets.num_skipped) == (1, 1)

    loss.backward()

    return loss


def test_stage1_step_reads_nothing_back_from_the_device() -> None:
    mapper = tiny_mapper().to(META)

    loss = stage1_step(mapper, torch.randn(100, mapper.llm_dim, device=META))

    assert loss.device == META and loss.dtype == torch.float32
    assert all(p.grad is not None for p in mapper.parameters())


def test_stage1_step_under_bf16_autocast_is_near_float32() -> None:
    embedding_table = torch.randn(100, 64, generator=torch.Generator().manual_seed(2)) * 0.1

    reference = tiny_mapper()
    fp32_loss = stage1_step(reference, embedding_table)

    mapper = tiny_mapper()
    bf16_loss = stage1_step(mapper, embedding_table, autocast=True)

    # The loss's reductions run in float32 whatever the autocast dtype.
    assert bf16_loss.dtype == torch.float32 and torch.isfinite(bf16_loss)
    torch.testing.assert_close(bf16_loss, fp32_loss, rtol=0.05, atol=0.05)

    for param, ref in zip(mapper.parameters(), reference.parameters()):
        assert param.grad is not None and param.grad.dtype == torch.float32 and torch.isfinite(param.grad).all()
        assert ref.grad is not None

    assert any(p.grad.abs().sum() > 0 for p in mapper.parameters() if p.grad is not None)


def tiny_speech_llm() -> SpeechLLM:
    mapper = load_model(TINY_MAPPER_CARD, device=CPU, dtype=torch.float32)
    assert isinstance(mapper, SpeechMapper)

    model, _, _ = load_speech_llm(
        get_asset_store().retrieve_card(TINY_MAPPER_CARD),
        SpeechLLMSection(),
        mapper=mapper,
        unwrapped_mapper=mapper,
        device=CPU,
    )

    # The features stand in for the speech encoder's (the feature cache's path).
    encoder = CachedFeatureEncoder(layer=0, output_dim=mapper.input_dim, frame_average=1)

    return SpeechLLM(encoder, mapper, model.llm, model.chat_template)


def stage2_step(model: SpeechLLM, *, device: torch.device, autocast: bool = False) -> InstructLossOutput:
    """The instruct unit's step with ``σ = 0.5`` (mapper, chat splice, frozen
    LLM, CE + stage-1 loss, metrics), then backward."""
    mapper = model.mapper
    assert isinstance(mapper, SpeechMapper)

    features, _ = features_of(mapper, device)

    batch = SpeechBatch(
        inputs=features,
        input_lens=INPUT_LENS,
        texts=["a b", "c d"],
        raw_texts=["A b", "C d"],
        target_ids=TRANSCRIPT_IDS,
        ids=["0", "1"],
        sources=["m:0", "m:1"],
        fields=[{}, {}],
    )

    loss_fn = InstructLoss(sigma=0.5, stage1_loss=create_stage1_loss(Stage1LossSection()))

    bag = MetricBag(device=device)
    add_instruct_metrics(bag, with_stage1=True)

    template = model.chat_template

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        mapped = model.map_speech(batch)

        prefixes = model.build_prefixes(mapped, [template.speech_prompt("Transcribe the audio.")] * 2)

        response = model.response_logits(prefixes, [template.response_ids(t) for t in batch.texts])

        targets = build_embedding_targets(batch.target_ids, mapped.lens, model.embedding_table, pad_idx=0)

        output = loss_fn(response, mapped.outputs, targets)

        update_instruct_metrics(bag, output, batch, asr_batch=True)

    output.loss.backward()

    return output


def test_stage2_step_reads_nothing_back_from_the_device() -> None:
    model = tiny_speech_llm()

    model.mapper.to(META)
    model.llm.to(META)

    output = stage2_step(model, device=META)

    assert output.loss.device == META and output.stage1_num_kept == 1
    assert all(p.grad is not None for p in model.mapper.parameters())


def test_stage2_step_under_bf16_autocast_is_near_float32() -> None:
    reference = stage2_step(tiny_speech_llm(), device=CPU)

    model = tiny_speech_llm()
    output = stage2_step(model, device=CPU, autocast=True)

    assert output.loss.dtype == torch.float32 and torch.isfinite(output.loss)
    torch.testing.assert_close(output.loss, reference.loss, rtol=0.05, atol=0.05)

    grads = [p.grad for p in model.mapper.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads if g is not None)
    assert all(p.grad is None for p in model.llm.parameters())


def test_compiled_mapper_matches_eager_for_three_lengths() -> None:
    torch._dynamo.reset()

    # One block: half the layers to compile (CPU compilation dominates the test).
    eager = tiny_mapper(num_blocks=1).eval()

    compiled = tiny_mapper(num_blocks=1).eval()
    compiled.load_state_dict(eager.state_dict())

    # As fairseq2's `model.compile_options` pass them, with dynamic shapes.
    options = CompileOptions(dynamic=True)

    compile_speechmapper(
        compiled,
        fullgraph=options.fullgraph,
        dynamic=options.dynamic,
        mode=options.mode,
        backend=options.backend,
        options=options.backend_options,
    )

    generator = torch.Generator().manual_seed(3)

    num_graphs = []

    start = time.perf_counter()

    with torch.no_grad():
        for lens in ([30, 21], [45, 35], [38, 26]):
            features = torch.randn(len(lens), max(lens), eager.input_dim, generator=generator)
            layout = BatchLayout.of(features, lens)

            expected, expected_layout = eager(features, layout)
            outputs, outputs_layout = compiled(features, layout)

            assert list(outputs_layout.seq_lens) == list(expected_layout.seq_lens)
            torch.testing.assert_close(outputs, expected, rtol=1e-4, atol=1e-5)

            num_graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])

    print(f"compile + 3 forwards: {time.perf_counter() - start:.1f} s, graphs after each: {num_graphs}")

    # Dynamic shapes: the first new length may add a dynamic graph, later
    # lengths reuse it.
    assert num_graphs[0] > 0 and num_graphs[2] == num_graphs[1], num_graphs
